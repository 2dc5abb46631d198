// Package manifest reads the Kubernetes objects npctl simulates (Namespaces,
// Pods, Services, EndpointSlices and NetworkPolicies) from multi-document
// YAML or JSON files, List kinds included, and checks them. Every error
// names the file, the document and the object it concerns.
package manifest

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	yamlv3 "go.yaml.in/yaml/v3"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"
)

// Stdin is the file name that reads standard input.
const Stdin = "-"

// Source locates an object: its file and its document (1-based), and its
// position in a List (1-based, 0 when the object is not in a List).
type Source struct {
	File     string
	Document int
	Item     int
}

func (s Source) String() string {
	if s.Item > 0 {
		return fmt.Sprintf("%s: document %d, item %d", s.File, s.Document, s.Item)
	}
	return fmt.Sprintf("%s: document %d", s.File, s.Document)
}

// Objects are the objects read, in input order, with where each came from.
type Objects struct {
	Namespaces      []corev1.Namespace
	Pods            []corev1.Pod
	Services        []corev1.Service
	EndpointSlices  []discoveryv1.EndpointSlice
	NetworkPolicies []networkingv1.NetworkPolicy
	// Sources maps ObjectName(kind, namespace, name) to its Source.
	Sources map[string]Source
}

// ObjectName is how errors and Sources name an object: "Pod x/a",
// "Namespace x".
func ObjectName(kind, namespace, name string) string {
	if namespace == "" {
		return kind + " " + name
	}
	return kind + " " + namespace + "/" + name
}

// SourceOf returns where the named object came from, or "" if unknown.
func (o *Objects) SourceOf(kind, namespace, name string) string {
	if s, ok := o.Sources[ObjectName(kind, namespace, name)]; ok {
		return s.String()
	}
	return ""
}

var scheme = func() *runtime.Scheme {
	scheme := runtime.NewScheme()
	for _, add := range []func(*runtime.Scheme) error{corev1.AddToScheme, discoveryv1.AddToScheme, networkingv1.AddToScheme} {
		if err := add(scheme); err != nil {
			panic(err)
		}
	}
	return scheme
}()

// LoadFiles reads every file (Stdin reads stdin) and checks the result
// with Validate. All errors found are returned together.
func LoadFiles(paths []string, stdin io.Reader) (*Objects, error) {
	if len(paths) == 0 {
		return nil, errors.New("no manifest given: pass files with -f (or -f - for stdin)")
	}
	objs := &Objects{Sources: map[string]Source{}}
	var errs []error
	for _, path := range paths {
		var r io.Reader
		if path == Stdin {
			if stdin == nil {
				return nil, errors.New("-: no standard input")
			}
			r = stdin
		} else {
			f, err := os.Open(path)
			if err != nil {
				errs = append(errs, err)
				continue
			}
			defer f.Close()
			r = f
		}
		errs = append(errs, objs.read(path, r)...)
	}
	if len(errs) == 0 {
		errs = Validate(objs)
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return objs, nil
}

// Load reads one stream of documents named name, then validates.
func Load(name string, r io.Reader) (*Objects, error) {
	objs := &Objects{Sources: map[string]Source{}}
	errs := objs.read(name, r)
	if len(errs) == 0 {
		errs = Validate(objs)
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return objs, nil
}

func (o *Objects) read(name string, r io.Reader) []error {
	docs := utilyaml.NewYAMLReader(bufio.NewReader(r))
	var errs []error
	for n := 1; ; n++ {
		doc, err := docs.Read()
		if err == io.EOF {
			return errs
		}
		if err != nil {
			return append(errs, fmt.Errorf("%s: document %d: %w", name, n, err))
		}
		if isBlank(doc) {
			continue
		}
		errs = append(errs, o.readDocument(Source{File: name, Document: n}, doc)...)
	}
}

// isBlank reports whether a YAML document holds only comments and space.
func isBlank(doc []byte) bool {
	for _, line := range bytes.Split(doc, []byte("\n")) {
		line = bytes.TrimSpace(line)
		if len(line) > 0 && line[0] != '#' && string(line) != "---" {
			return false
		}
	}
	return true
}

type header struct {
	metav1.TypeMeta `json:",inline"`
	Metadata        struct {
		Name      string `json:"name"`
		Namespace string `json:"namespace"`
	} `json:"metadata"`
}

// readDocument decodes one YAML (or JSON) document. Decoding goes straight
// into the typed object so that YAML 1.1 words (y, no, on) stay strings
// where the type wants strings, as kubectl reads them.
func (o *Objects) readDocument(src Source, doc []byte) []error {
	var h header
	if err := yaml.Unmarshal(doc, &h); err != nil {
		return []error{fmt.Errorf("%s: not a Kubernetes object: %w", src, err)}
	}
	if h.Kind == "" || h.APIVersion == "" {
		return []error{fmt.Errorf("%s: object %q has no kind or apiVersion", src, h.Metadata.Name)}
	}
	if strings.HasSuffix(h.Kind, "List") {
		return o.readList(src, h.Kind, doc)
	}
	described := fmt.Sprintf("%s: %s %q", src, h.Kind, qualified(h.Metadata.Namespace, h.Metadata.Name))
	obj, err := scheme.New(schema.FromAPIVersionAndKind(h.APIVersion, h.Kind))
	if err == nil && !supported(obj) || runtime.IsNotRegisteredError(err) {
		return []error{fmt.Errorf("%s: unknown kind %s (apiVersion %s); npctl reads Namespace, Pod, Service, EndpointSlice, NetworkPolicy and List", described, h.Kind, h.APIVersion)}
	}
	if err != nil {
		return []error{fmt.Errorf("%s: %w", described, err)}
	}
	if err := yaml.UnmarshalStrict(doc, obj); err != nil {
		return []error{fmt.Errorf("%s: %w", described, err)}
	}
	if err := o.add(src, obj); err != nil {
		return []error{err}
	}
	return nil
}

func supported(obj runtime.Object) bool {
	switch obj.(type) {
	case *corev1.Namespace, *corev1.Pod, *corev1.Service, *discoveryv1.EndpointSlice, *networkingv1.NetworkPolicy:
		return true
	}
	return false
}

func (o *Objects) readList(src Source, kind string, doc []byte) []error {
	if src.Item > 0 {
		return []error{fmt.Errorf("%s: a %s inside a List is not supported", src, kind)}
	}
	var list struct {
		Items []yamlv3.Node `yaml:"items"`
	}
	if err := yamlv3.Unmarshal(doc, &list); err != nil {
		return []error{fmt.Errorf("%s: %s: %w", src, kind, err)}
	}
	var errs []error
	for i := range list.Items {
		item, err := yamlv3.Marshal(&list.Items[i])
		itemSrc := Source{File: src.File, Document: src.Document, Item: i + 1}
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", itemSrc, err))
			continue
		}
		errs = append(errs, o.readDocument(itemSrc, item)...)
	}
	return errs
}

func qualified(namespace, name string) string {
	if namespace == "" {
		return name
	}
	return namespace + "/" + name
}

// add records obj, defaulting the namespace of namespaced objects to
// "default", and rejects a second object of the same kind and name.
func (o *Objects) add(src Source, obj runtime.Object) error {
	var kind string
	var meta *metav1.ObjectMeta
	switch v := obj.(type) {
	case *corev1.Namespace:
		kind = "Namespace"
		v.Namespace = ""
		o.Namespaces = append(o.Namespaces, *v)
		meta = &o.Namespaces[len(o.Namespaces)-1].ObjectMeta
	case *corev1.Pod:
		kind = "Pod"
		o.Pods = append(o.Pods, *v)
		meta = &o.Pods[len(o.Pods)-1].ObjectMeta
	case *corev1.Service:
		kind = "Service"
		o.Services = append(o.Services, *v)
		meta = &o.Services[len(o.Services)-1].ObjectMeta
	case *discoveryv1.EndpointSlice:
		kind = "EndpointSlice"
		o.EndpointSlices = append(o.EndpointSlices, *v)
		meta = &o.EndpointSlices[len(o.EndpointSlices)-1].ObjectMeta
	case *networkingv1.NetworkPolicy:
		kind = "NetworkPolicy"
		o.NetworkPolicies = append(o.NetworkPolicies, *v)
		meta = &o.NetworkPolicies[len(o.NetworkPolicies)-1].ObjectMeta
	default:
		return fmt.Errorf("%s: unsupported object %T", src, obj)
	}
	if kind != "Namespace" && meta.Namespace == "" {
		meta.Namespace = metav1.NamespaceDefault
	}
	if meta.Name == "" {
		return fmt.Errorf("%s: %s without metadata.name", src, kind)
	}
	key := ObjectName(kind, meta.Namespace, meta.Name)
	if first, dup := o.Sources[key]; dup {
		return fmt.Errorf("%s: %s is defined twice (first at %s)", src, key, first)
	}
	o.Sources[key] = src
	return nil
}
