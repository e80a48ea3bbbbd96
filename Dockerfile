# Parley as a container, e.g. a sidecar beside the XMPP server or homeserver.
#   docker build -t parley .
#   docker run -v ./parley.yaml:/etc/parley/parley.yaml:ro -v parley-data:/var/lib/parley parley
FROM golang:1.26-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=devel
RUN CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X main.version=${VERSION}" -o /out/parley ./cmd/parley \
 && mkdir -p /out/data

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/parley /usr/local/bin/parley
COPY --from=build --chown=nonroot:nonroot /out/data /var/lib/parley
COPY config.example.yaml /etc/parley/parley.yaml
USER nonroot:nonroot
ENV PARLEY_CONFIG=/etc/parley/parley.yaml
VOLUME ["/etc/parley", "/var/lib/parley"]
# 5347-style component connections go out; the appservice and admin listen,
# and SIP and the media of calls (calls.media.ports in the config).
EXPOSE 29328 9090 5060/udp 5060/tcp 20000-20999/udp
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s \
  CMD ["/usr/local/bin/parley", "healthcheck"]
ENTRYPOINT ["/usr/local/bin/parley"]
CMD ["run"]
