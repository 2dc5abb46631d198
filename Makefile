# Palisade: eBPF NetworkPolicy enforcement. See README.md.
SHELL := /bin/bash
GO ?= go
CACHE ?= $(HOME)/.cache/palisade
CONTROLLER_GEN ?= $(CACHE)/bin/controller-gen
export KUBEBUILDER_ASSETS ?= $(CACHE)/assets

.PHONY: all generate generate-bpf generate-api check-generated build test testenv deps demo bench bench-short vet

all: build

## deps: Debian packages the tests and the generators use (root).
deps:
	hack/deps.sh

## generate: regenerate bpf2go output (clang-19), deepcopy and the CRD.
generate: generate-bpf generate-api

generate-bpf:
	$(GO) generate ./dataplane/...

generate-api: $(CONTROLLER_GEN)
	$(CONTROLLER_GEN) object paths=./api/...
	$(CONTROLLER_GEN) crd paths=./api/... output:crd:artifacts:config=deploy/crd

$(CONTROLLER_GEN):
	GOBIN=$(CACHE)/bin $(GO) install sigs.k8s.io/controller-tools/cmd/controller-gen@v0.23.0

## check-generated: fail if committed generated files differ from a fresh `make generate`.
check-generated: generate
	git diff --exit-code -- dataplane api deploy/crd

## build: all binaries into bin/.
build:
	$(GO) build -o bin/ ./cmd/...

vet:
	$(GO) vet ./...
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { gofmt -l $$(git ls-files '*.go'); exit 1; }

## testenv: kube-apiserver (built once from the Go module proxy) and etcd for envtest.
testenv: deps
	hack/testenv.sh

## test: everything: unit, differential, real traffic, controller and end-to-end tests (root).
test: testenv
	hack/test.sh

## demo: a local cluster on this machine, pods as network namespaces, policies applied.
demo: testenv build
	hack/demo.sh

## bench: the full performance suite; bench-short is what CI runs.
bench: testenv
	hack/bench.sh full

bench-short: deps
	hack/bench.sh short
