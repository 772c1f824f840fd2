# Herald's one image: the operator (`herald manager`), the shard relay and the injected sidecar
# (`herald relay`). The binary lives at /herald: the sidecar's exec probes call `/herald probe`.
FROM golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o /herald .

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /herald /herald
USER 65532:65532
ENTRYPOINT ["/herald"]
