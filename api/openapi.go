package api

import _ "embed"

// openAPI is the API's OpenAPI 3 description, served at
// /api/v1/openapi.yaml. It is a copy of docs/openapi.yaml, which a test
// keeps identical.
//
//go:embed openapi.yaml
var openAPI []byte
