package dataplane

//go:generate go run github.com/cilium/ebpf/cmd/bpf2go -cc clang-19 -strip llvm-strip-19 -target bpfel -cflags "-O2 -g -Wall -Werror" -type endpoint -type inline_port -type port_key -type counters -type ct_key -type ct_key4 -type ct_entry -type frag_key -type frag_entry -type event_bucket -type flow_slot palisade ../bpf/palisade.c -- -I/usr/include/bpf -I/usr/include/x86_64-linux-gnu
