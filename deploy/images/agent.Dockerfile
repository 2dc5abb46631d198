# syntax=docker/dockerfile:1
# Build from the repository root: docker build -f deploy/images/agent.Dockerfile .
ARG GO_VERSION=1.26

FROM --platform=$BUILDPLATFORM golang:${GO_VERSION}-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/go/pkg/mod go mod download
COPY . .
ARG TARGETOS TARGETARCH
RUN --mount=type=cache,target=/go/pkg/mod --mount=type=cache,target=/root/.cache/go-build \
    CGO_ENABLED=0 GOOS=$TARGETOS GOARCH=$TARGETARCH \
    go build -trimpath -ldflags='-s -w' -o /out/agent ./cmd/agent

# Root (uid 0) with only the capabilities agent.yaml adds: BPF and netlink
# operations check them on the process, and non-root processes do not keep
# added capabilities.
FROM gcr.io/distroless/static-debian12:latest
COPY --from=build /out/agent /usr/local/bin/agent
ENTRYPOINT ["/usr/local/bin/agent"]
