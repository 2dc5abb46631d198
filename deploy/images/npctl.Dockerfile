# syntax=docker/dockerfile:1
# Build from the repository root: docker build -f deploy/images/npctl.Dockerfile .
ARG GO_VERSION=1.26

FROM --platform=$BUILDPLATFORM golang:${GO_VERSION}-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/go/pkg/mod go mod download
COPY . .
ARG TARGETOS TARGETARCH
RUN --mount=type=cache,target=/go/pkg/mod --mount=type=cache,target=/root/.cache/go-build \
    CGO_ENABLED=0 GOOS=$TARGETOS GOARCH=$TARGETARCH \
    go build -trimpath -ldflags='-s -w' -o /out/npctl ./cmd/npctl

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/npctl /usr/local/bin/npctl
ENTRYPOINT ["/usr/local/bin/npctl"]
