package dataplane

import (
	"errors"
	"fmt"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
)

// Floor is a program for benchmarks that does only what the first packet
// of an allowed flow cannot avoid, with the kernel structures the programs
// use: optionally the longest-prefix lookup (which a flow of a peer whose
// decision the programs cache skips) of the frame's source in an
// endpoint's ingress CIDR table (found in cidr_tables), then the insert of the flow into an LRU
// hash of its own, of conntrack's size and key and entry sizes (IPv4: a
// 16-byte key of addresses and ports; IPv6: 44 bytes, 8 zero bytes then
// addresses and ports; a 24-byte entry). It passes every frame, but drops one whose
// source the table does not hold.
type Floor struct {
	Program *ebpf.Program
	LRU     *ebpf.Map
}

// Close unloads the program and its map.
func (f *Floor) Close() error {
	return errors.Join(f.Program.Close(), f.LRU.Close())
}

// NewFloor loads a Floor for frames of one family (Ethernet, no IPv4
// options or IPv6 extension headers). With lookup, the program first looks
// the source up in the ingress table of the endpoint at ifindex.
func (d *Dataplane) NewFloor(ifindex int, ipv6, lookup bool) (*Floor, error) {
	const ipHeader, value, cidrKey, tableKey = 14, -72, -104, -112
	keySize, key := 16, int16(-16)
	addresses, ports := []int16{ipHeader + 12}, int16(ipHeader+20)
	if ipv6 {
		keySize, key = 44, -48
		addresses, ports = []int16{ipHeader + 8, ipHeader + 16, ipHeader + 24, ipHeader + 32}, ipHeader+40
	}
	insns := asm.Instructions{
		asm.Mov.Reg(asm.R6, asm.R1),
		asm.LoadMem(asm.R2, asm.R6, 76, asm.Word), // __sk_buff.data
		asm.LoadMem(asm.R3, asm.R6, 80, asm.Word), // __sk_buff.data_end
		asm.Mov.Reg(asm.R4, asm.R2),
		asm.Add.Imm(asm.R4, int32(ports)+4),
		asm.JGT.Reg(asm.R4, asm.R3, "pass"),
	}
	if lookup {
		d.mu.Lock()
		rec := d.endpoints[ifindex]
		d.mu.Unlock()
		if rec == nil || rec.value.Policy[0] == 0 {
			return nil, fmt.Errorf("endpoint %d has no ingress rules to look up", ifindex)
		}
		table, tag, prefixlen := rec.value.Policy[0], uint32(0), cidrKeyBits+128
		if !ipv6 {
			tag, prefixlen = 1, cidrKeyBits+32
		}
		insns = append(insns,
			asm.StoreImm(asm.RFP, tableKey, int64(table), asm.Word),
			asm.LoadMapPtr(asm.R1, d.objs.CidrTables.FD()),
			asm.Mov.Reg(asm.R2, asm.RFP),
			asm.Add.Imm(asm.R2, tableKey),
			asm.FnMapLookupElem.Call(),
			asm.JEq.Imm(asm.R0, 0, "miss"),
			asm.Mov.Reg(asm.R7, asm.R0),
			asm.LoadMem(asm.R2, asm.R6, 76, asm.Word),
			asm.LoadMem(asm.R3, asm.R6, 80, asm.Word),
			asm.Mov.Reg(asm.R4, asm.R2),
			asm.Add.Imm(asm.R4, int32(ports)+4),
			asm.JGT.Reg(asm.R4, asm.R3, "pass"),
			asm.StoreImm(asm.RFP, cidrKey, int64(prefixlen), asm.Word),
			asm.StoreImm(asm.RFP, cidrKey+4, int64(networkOrder(tag)), asm.Word),
			asm.Mov.Imm(asm.R4, 0),
			asm.StoreMem(asm.RFP, cidrKey+8, asm.R4, asm.DWord),
			asm.StoreMem(asm.RFP, cidrKey+16, asm.R4, asm.DWord),
		)
		if ipv6 {
			insns = append(insns,
				asm.LoadMem(asm.R4, asm.R2, ipHeader+8, asm.DWord), asm.StoreMem(asm.RFP, cidrKey+8, asm.R4, asm.DWord),
				asm.LoadMem(asm.R4, asm.R2, ipHeader+16, asm.DWord), asm.StoreMem(asm.RFP, cidrKey+16, asm.R4, asm.DWord))
		} else {
			insns = append(insns, asm.LoadMem(asm.R4, asm.R2, ipHeader+12, asm.Word), asm.StoreMem(asm.RFP, cidrKey+8, asm.R4, asm.Word))
		}
		insns = append(insns,
			asm.Mov.Reg(asm.R1, asm.R7),
			asm.Mov.Reg(asm.R2, asm.RFP),
			asm.Add.Imm(asm.R2, cidrKey),
			asm.FnMapLookupElem.Call(),
			asm.JEq.Imm(asm.R0, 0, "miss"),
			// the call ends the packet pointers' life
			asm.LoadMem(asm.R2, asm.R6, 76, asm.Word),
			asm.LoadMem(asm.R3, asm.R6, 80, asm.Word),
			asm.Mov.Reg(asm.R4, asm.R2),
			asm.Add.Imm(asm.R4, int32(ports)+4),
			asm.JGT.Reg(asm.R4, asm.R3, "pass"),
		)
	}
	insns = append(insns,
		asm.Mov.Imm(asm.R4, 0),
		asm.StoreMem(asm.RFP, value, asm.R4, asm.DWord),
		asm.StoreMem(asm.RFP, value+8, asm.R4, asm.DWord),
		asm.StoreMem(asm.RFP, value+16, asm.R4, asm.DWord),
	)
	at := key
	if ipv6 {
		insns = append(insns, asm.StoreMem(asm.RFP, at, asm.R4, asm.DWord))
		at += 8
	}
	for _, off := range addresses {
		insns = append(insns, asm.LoadMem(asm.R4, asm.R2, off, asm.DWord), asm.StoreMem(asm.RFP, at, asm.R4, asm.DWord))
		at += 8
	}
	lru, err := ebpf.NewMap(&ebpf.MapSpec{Type: ebpf.LRUHash, KeySize: uint32(keySize), ValueSize: 24,
		MaxEntries: uint32(d.cfg.ConntrackSize)})
	if err != nil {
		return nil, fmt.Errorf("create LRU map: %w", err)
	}
	insns = append(insns,
		asm.LoadMem(asm.R4, asm.R2, ports, asm.Word),
		asm.StoreMem(asm.RFP, at, asm.R4, asm.DWord), // the ports, and zeros past the key's end
		asm.LoadMapPtr(asm.R1, lru.FD()),
		asm.Mov.Reg(asm.R2, asm.RFP),
		asm.Add.Imm(asm.R2, int32(key)),
		asm.Mov.Reg(asm.R3, asm.RFP),
		asm.Add.Imm(asm.R3, value),
		asm.Mov.Imm(asm.R4, 0),
		asm.FnMapUpdateElem.Call(),
		asm.Mov.Imm(asm.R0, -1).WithSymbol("pass"),
		asm.Return(),
	)
	if lookup {
		insns = append(insns, asm.Mov.Imm(asm.R0, 2).WithSymbol("miss"), asm.Return())
	}
	prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{Type: ebpf.SchedCLS, License: "Dual BSD/GPL", Instructions: insns})
	if err != nil {
		lru.Close()
		return nil, fmt.Errorf("load floor program: %w", err)
	}
	return &Floor{Program: prog, LRU: lru}, nil
}
