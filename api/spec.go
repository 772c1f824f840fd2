// Package api is Herald's published API: the NotificationChannel types (v1alpha1) and the
// relay's HTTP API, as an OpenAPI 3.1 document (openapi.yaml: publish, shard map, health) and an
// AsyncAPI 3 document (asyncapi.yaml: the SSE and WebSocket streams). Relays and sidecars serve
// both at /v1/openapi.yaml and /v1/asyncapi.yaml.
package api

import _ "embed"

// OpenAPI is openapi.yaml.
//
//go:embed openapi.yaml
var OpenAPI []byte

// AsyncAPI is asyncapi.yaml.
//
//go:embed asyncapi.yaml
var AsyncAPI []byte
