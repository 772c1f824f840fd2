package event

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"mime"
)

// ErrUnsupportedMediaType marks publish input whose Content-Type the relay cannot take (HTTP 415).
var ErrUnsupportedMediaType = errors.New("unsupported media type")

// StructuredMediaType is the Content-Type of a CloudEvent sent in structured mode.
const StructuredMediaType = "application/cloudevents+json"

// Publish is what a publisher asked to send, before Redis gives it an ID.
type Publish struct {
	Subject     string // CloudEvents subject from a structured body ("" if absent)
	Type        string // CloudEvents type (DefaultType if the publisher named none)
	ContentType string // datacontenttype of Data ("" if unknown)
	Data        []byte // payload; JSON payloads are compacted to one line
}

// ParsePublish reads a publish request in either CloudEvents HTTP mode:
//
//   - binary: the body is the data, contentType (the Content-Type header) its datacontenttype and
//     ceType (the Ce-Type header, optional) its type;
//   - structured: contentType is application/cloudevents+json and the body is a CloudEvent whose
//     type, datacontenttype, subject and data or data_base64 are used (id, source and time are the
//     relay's to assign and are ignored).
//
// A JSON content type requires a valid JSON body. Errors wrap ErrUnsupportedMediaType (415) or
// are plain bad-request errors (400); each says what is wrong.
func ParsePublish(contentType, ceType string, body []byte) (Publish, error) {
	if contentType == "" {
		return Publish{}, fmt.Errorf("%w: a Content-Type header is required (the data's media type, or %s)", ErrUnsupportedMediaType, StructuredMediaType)
	}
	mt, _, err := mime.ParseMediaType(contentType)
	if err != nil || len(contentType) > MaxContentTypeBytes || ValidateField("Content-Type", contentType, MaxContentTypeBytes) != nil {
		return Publish{}, fmt.Errorf("%w: Content-Type %q is not a valid media type", ErrUnsupportedMediaType, clip(contentType))
	}
	if mt == StructuredMediaType {
		return parseStructured(body)
	}
	if mt == "application/cloudevents-batch+json" {
		return Publish{}, fmt.Errorf("%w: batched CloudEvents are not supported; publish one event per request", ErrUnsupportedMediaType)
	}
	p := Publish{Type: ceType, ContentType: contentType, Data: body}
	if p.Type == "" {
		p.Type = DefaultType
	} else if err := ValidateField("Ce-Type header", p.Type, MaxTypeBytes); err != nil {
		return Publish{}, err
	}
	if IsJSONMediaType(contentType) {
		if p.Data, err = compactJSON(body); err != nil {
			return Publish{}, fmt.Errorf("body is not valid JSON but Content-Type is %s: %v", mt, err)
		}
	}
	return p, nil
}

// structured is the part of a structured-mode CloudEvent the relay reads.
type structured struct {
	SpecVersion     string          `json:"specversion"`
	Type            *string         `json:"type"`
	DataContentType *string         `json:"datacontenttype"`
	Subject         *string         `json:"subject"`
	Data            json.RawMessage `json:"data"`
	DataBase64      *string         `json:"data_base64"`
}

func parseStructured(body []byte) (Publish, error) {
	var ce structured
	dec := json.NewDecoder(bytes.NewReader(body))
	if err := dec.Decode(&ce); err != nil {
		return Publish{}, fmt.Errorf("body is not a CloudEvent in JSON: %v", err)
	}
	if dec.More() {
		return Publish{}, errors.New("body holds more than one JSON value")
	}
	if ce.SpecVersion != "" && ce.SpecVersion != "1.0" {
		return Publish{}, fmt.Errorf("specversion %q is not supported (only 1.0)", clip(ce.SpecVersion))
	}
	var p Publish
	p.Type = DefaultType
	if ce.Type != nil {
		if err := ValidateField("type", *ce.Type, MaxTypeBytes); err != nil {
			return Publish{}, err
		}
		p.Type = *ce.Type
	}
	if ce.Subject != nil {
		if err := ValidateField("subject", *ce.Subject, MaxKeyBytes); err != nil {
			return Publish{}, err
		}
		p.Subject = *ce.Subject
	}
	if ce.DataContentType != nil {
		if _, _, err := mime.ParseMediaType(*ce.DataContentType); err != nil || ValidateField("datacontenttype", *ce.DataContentType, MaxContentTypeBytes) != nil {
			return Publish{}, fmt.Errorf("datacontenttype %q is not a valid media type", clip(*ce.DataContentType))
		}
		p.ContentType = *ce.DataContentType
	}
	hasData := len(ce.Data) > 0 && !bytes.Equal(ce.Data, []byte("null"))
	switch {
	case hasData && ce.DataBase64 != nil:
		return Publish{}, errors.New("a CloudEvent carries data or data_base64, not both")
	case ce.DataBase64 != nil:
		d, err := base64.StdEncoding.DecodeString(*ce.DataBase64)
		if err != nil {
			return Publish{}, fmt.Errorf("data_base64 is not base64: %v", err)
		}
		p.Data = d
		if p.ContentType == "" {
			p.ContentType = "application/octet-stream"
		}
	case hasData:
		// CloudEvents JSON format 3.1: without datacontenttype, data is JSON.
		if p.ContentType == "" {
			p.ContentType = "application/json"
		}
		if IsJSONMediaType(p.ContentType) {
			d, err := compactJSON(ce.Data)
			if err != nil {
				return Publish{}, err
			}
			p.Data = d
		} else {
			var s string
			if err := json.Unmarshal(ce.Data, &s); err != nil {
				return Publish{}, fmt.Errorf("data must be a JSON string when datacontenttype %q is not JSON", clip(p.ContentType))
			}
			p.Data = []byte(s)
		}
	}
	return p, nil
}

func compactJSON(b []byte) ([]byte, error) {
	var buf bytes.Buffer
	buf.Grow(len(b))
	if err := json.Compact(&buf, b); err != nil {
		return nil, err
	}
	if buf.Len() == 0 {
		return nil, errors.New("empty JSON")
	}
	return buf.Bytes(), nil
}

// clip shortens untrusted text quoted back in an error message.
func clip(s string) string {
	if len(s) > 64 {
		return s[:64] + "..."
	}
	return s
}
