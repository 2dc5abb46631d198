// Package report renders a run for people: a Markdown summary with every
// measurement, its ratio, target and baseline, and a PNG chart of the
// gating ratios against their targets.
package report

import (
	"fmt"
	"image/color"
	"maps"
	"os"
	"slices"
	"strconv"
	"strings"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgimg"

	"github.com/palisade-net/palisade/bench/regress"
	"github.com/palisade-net/palisade/bench/result"
)

// Summary renders run and the regression findings as Markdown.
func Summary(run *result.Run, findings []regress.Finding, tolerance float64) string {
	var b strings.Builder
	b.WriteString("# Palisade benchmark results\n\n")
	fmt.Fprintf(&b, "Mode `%s`, started %s.", run.Mode, run.Started.UTC().Format("2006-01-02 15:04 MST"))
	for _, key := range slices.Sorted(maps.Keys(run.Environment)) {
		fmt.Fprintf(&b, " %s: `%s`.", key, run.Environment[key])
	}
	b.WriteString("\n\n")

	failures := regress.Failures(findings)
	verdict := "PASS"
	if len(failures) > 0 {
		verdict = "FAIL"
	}
	fmt.Fprintf(&b, "**%s**: %d gating same-run ratios, %d more than their tolerance (%.0f%% unless the baseline says otherwise) worse than their baseline; target misses are marked but do not fail. "+
		"Ratios compare with a reference measured in the same run (an empty TC program, or the same traffic without programs); "+
		"absolute times are reported, never gated.\n\n", verdict, len(findings), len(failures), tolerance*100)
	for _, f := range failures {
		fmt.Fprintf(&b, "- `%s`: %s\n", f.Name, strings.Join(f.Problems, "; "))
	}
	if len(failures) > 0 {
		b.WriteString("\n")
	}

	byName := map[string]regress.Finding{}
	for _, f := range findings {
		byName[f.Name] = f
	}
	var groups []string
	for _, m := range run.Measurements {
		if !slices.Contains(groups, m.Group()) {
			groups = append(groups, m.Group())
		}
	}
	for _, group := range groups {
		fmt.Fprintf(&b, "## %s\n\n", group)
		b.WriteString("| benchmark | values | ratio | target | baseline | status |\n|---|---|---|---|---|---|\n")
		for _, m := range run.Measurements {
			if m.Group() != group {
				continue
			}
			b.WriteString(row(m, byName[m.Name]))
		}
		b.WriteString("\n")
	}
	if len(run.Skipped) > 0 {
		b.WriteString("## Not measured\n\n")
		for _, part := range slices.Sorted(maps.Keys(run.Skipped)) {
			fmt.Fprintf(&b, "- %s: %s\n", part, run.Skipped[part])
		}
		b.WriteString("\n")
	}
	b.WriteString("![gating ratios](chart.png)\n")
	return b.String()
}

func row(m result.Measurement, f regress.Finding) string {
	var values []string
	ratio, target, baseline, status := "", "", "", ""
	for _, metric := range m.Metrics {
		switch {
		case metric.Gate:
			ratio = strconv.FormatFloat(metric.Value, 'f', 3, 64)
			target = metric.Target.String()
			if f.Baseline > 0 {
				baseline = strconv.FormatFloat(f.Baseline, 'f', 3, 64)
			}
			switch {
			case f.Regressed && f.MissedTarget:
				status = "**REGRESSED, MISSES TARGET**"
			case f.Regressed:
				status = "**REGRESSED**"
			case f.MissedTarget:
				status = "**MISSES TARGET**"
			default:
				status = "ok"
			}
		case metric.Target != nil:
			mark := "meets"
			if !metric.Target.Met(metric.Value, 0) {
				mark = "misses"
			}
			values = append(values, fmt.Sprintf("%s %s (%s target %s)", human(metric.Value), metric.Unit, mark, metric.Target))
		default:
			values = append(values, human(metric.Value)+" "+metric.Unit)
		}
	}
	return fmt.Sprintf("| `%s` | %s | %s | %s | %s | %s |\n", m.Name, strings.Join(values, ", "), ratio, target, baseline, status)
}

func human(v float64) string {
	switch {
	case v >= 1e9 || v <= -1e9:
		return strconv.FormatFloat(v/1e9, 'f', 2, 64) + "G"
	case v >= 1e6 || v <= -1e6:
		return strconv.FormatFloat(v/1e6, 'f', 2, 64) + "M"
	case v >= 1e4 || v <= -1e4:
		return strconv.FormatFloat(v/1e3, 'f', 1, 64) + "k"
	}
	return strconv.FormatFloat(v, 'g', 4, 64)
}

var (
	green = color.RGBA{R: 0x2e, G: 0x9e, B: 0x4f, A: 0xff}
	red   = color.RGBA{R: 0xd6, G: 0x3b, B: 0x3b, A: 0xff}
	// scenarioColors colour the hot path's packet kinds, in this order.
	scenarioColors = []color.RGBA{
		{R: 0x1f, G: 0x77, B: 0xb4, A: 0xff},
		{R: 0xff, G: 0x7f, B: 0x0e, A: 0xff},
		{R: 0x94, G: 0x67, B: 0xbd, A: 0xff},
	}
)

// ratioBar is one gating ratio.
type ratioBar struct {
	name   string
	value  float64
	target *result.Limit
}

// Chart saves a PNG at path: the hot path's per-packet ratios grouped by
// rule set, one colour per packet kind with its target as a dashed line
// of the same colour, above every other gating ratio as a bar, green when
// it meets its target (or has none) and red when it misses.
func Chart(run *result.Run, path string) error {
	var hot, other []ratioBar
	for _, m := range run.Measurements {
		for _, metric := range m.Metrics {
			if !metric.Gate {
				continue
			}
			bar := ratioBar{m.Name, metric.Value, metric.Target}
			if isHotPathPacket(m.Name) {
				hot = append(hot, bar)
			} else {
				other = append(other, bar)
			}
		}
	}
	if len(hot)+len(other) == 0 {
		return fmt.Errorf("report: no gating ratios to chart")
	}
	var plots []*plot.Plot
	if len(hot) > 0 {
		p, err := hotPathPlot(hot)
		if err != nil {
			return err
		}
		plots = append(plots, p)
	}
	if len(other) > 0 {
		p, err := barsPlot(other)
		if err != nil {
			return err
		}
		plots = append(plots, p)
	}
	width := max(10*vg.Inch, vg.Length(max(len(other), 3*len(hot)/4))*vg.Points(22))
	height := vg.Length(len(plots)) * 6 * vg.Inch
	img := vgimg.New(width, height)
	canvas := draw.New(img)
	rows := make([][]*plot.Plot, len(plots))
	for i, p := range plots {
		rows[i] = []*plot.Plot{p}
	}
	tiles := draw.Tiles{Rows: len(plots), Cols: 1, PadTop: vg.Points(6), PadBottom: vg.Points(6), PadY: vg.Points(24), PadLeft: vg.Points(6), PadRight: vg.Points(6)}
	for i, row := range plot.Align(rows, tiles, canvas) {
		plots[i].Draw(row[0])
	}
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("report: %w", err)
	}
	_, err = vgimg.PngCanvas{Canvas: img}.WriteTo(f)
	if closeErr := f.Close(); err == nil {
		err = closeErr
	}
	if err != nil {
		return fmt.Errorf("report: save %s: %w", path, err)
	}
	return nil
}

// isHotPathPacket: "HotPath/<packet kind>/..." but not the growth ratios.
func isHotPathPacket(name string) bool {
	parts := strings.SplitN(name, "/", 3)
	return len(parts) == 3 && parts[0] == "HotPath" && parts[1] != "growth"
}

func hotPathPlot(bars []ratioBar) (*plot.Plot, error) {
	var scenarios, groups []string
	values := map[string]map[string]ratioBar{}
	for _, b := range bars {
		parts := strings.SplitN(b.name, "/", 3)
		scenario, group := parts[1], strings.ReplaceAll(parts[2], "/", " ")
		if !slices.Contains(scenarios, scenario) {
			scenarios = append(scenarios, scenario)
			values[scenario] = map[string]ratioBar{}
		}
		if !slices.Contains(groups, group) {
			groups = append(groups, group)
		}
		values[scenario][group] = b
	}
	p := plot.New()
	p.Title.Text = "Hot path: cost per packet / empty TC program (dashed: targets)"
	p.Y.Label.Text = "ratio"
	p.Y.Min = 0
	width := vg.Points(7)
	for i, scenario := range scenarios {
		series := make(plotter.Values, len(groups))
		var target *result.Limit
		for g, group := range groups {
			series[g] = values[scenario][group].value
			if t := values[scenario][group].target; t != nil {
				target = t
			}
		}
		chart, err := plotter.NewBarChart(series, width)
		if err != nil {
			return nil, fmt.Errorf("report: bars: %w", err)
		}
		c := scenarioColors[i%len(scenarioColors)]
		chart.Color = c
		chart.LineStyle.Width = 0
		chart.Offset = vg.Length(i-len(scenarios)/2) * width
		p.Add(chart)
		p.Legend.Add(scenario, chart)
		if target != nil && target.Max != nil {
			line, err := plotter.NewLine(plotter.XYs{{X: -0.5, Y: *target.Max}, {X: float64(len(groups)) - 0.5, Y: *target.Max}})
			if err != nil {
				return nil, fmt.Errorf("report: target line: %w", err)
			}
			line.LineStyle.Color = c
			line.LineStyle.Dashes = []vg.Length{vg.Points(5), vg.Points(3)}
			p.Add(line)
		}
	}
	p.Legend.Top = true
	p.Legend.Left = true
	p.NominalX(groups...)
	rotateLabels(p)
	p.Add(plotter.NewGrid())
	return p, nil
}

func barsPlot(bars []ratioBar) (*plot.Plot, error) {
	p := plot.New()
	p.Title.Text = "Other same-run ratios (throughput: with / without programs; growth, scaling, change: see summary.md)"
	p.Y.Label.Text = "ratio"
	p.Y.Min = 0
	names := make([]string, len(bars))
	for i, b := range bars {
		names[i] = b.name
		single := make(plotter.Values, len(bars))
		single[i] = b.value
		chart, err := plotter.NewBarChart(single, vg.Points(14))
		if err != nil {
			return nil, fmt.Errorf("report: bars: %w", err)
		}
		chart.LineStyle.Width = 0
		chart.Color = green
		if !b.target.Met(b.value, 0) {
			chart.Color = red
		}
		p.Add(chart)
	}
	one, err := plotter.NewLine(plotter.XYs{{X: -0.5, Y: 1}, {X: float64(len(bars)) - 0.5, Y: 1}})
	if err != nil {
		return nil, fmt.Errorf("report: reference line: %w", err)
	}
	one.LineStyle.Dashes = []vg.Length{vg.Points(4), vg.Points(3)}
	p.Add(one)
	p.NominalX(names...)
	rotateLabels(p)
	p.Add(plotter.NewGrid())
	return p, nil
}

func rotateLabels(p *plot.Plot) {
	p.X.Tick.Label.Rotation = 1.2
	p.X.Tick.Label.XAlign = draw.XRight
	p.X.Tick.Label.YAlign = draw.YCenter
	p.X.Tick.Label.Font.Size = vg.Points(8)
}
