package sip

import (
	"bytes"
	"errors"
	"strings"
	"testing"
)

func TestParseCPIM(t *testing.T) {
	crlf := func(s string) string { return strings.ReplaceAll(s, "\n", "\r\n") }
	tests := []struct {
		name        string
		body        string
		headers     []cpimHeader
		contentType string
		content     string
		wantErr     error
	}{
		{
			name: "RFC 3862 example",
			body: crlf("From: MR SANDERS <im:piglet@100akerwood.com>\nTo: Depressed Donkey <im:eeyore@100akerwood.com>\nDateTime: 2000-12-13T13:40:00-08:00\nSubject: the weather will be fine today\n\n" +
				"Content-type: text/plain\nContent-ID: <1234567890@foo.com>\n\nHere is the text of my message."),
			headers: []cpimHeader{
				{"From", "MR SANDERS <im:piglet@100akerwood.com>"},
				{"To", "Depressed Donkey <im:eeyore@100akerwood.com>"},
				{"DateTime", "2000-12-13T13:40:00-08:00"},
				{"Subject", "the weather will be fine today"},
			},
			contentType: "text/plain",
			content:     "Here is the text of my message.",
		},
		{
			name:        "bare LF line ends",
			body:        "From: <sip:a@b>\n\nContent-Type: text/plain;charset=utf-8\n\nline one\nline two\n",
			headers:     []cpimHeader{{"From", "<sip:a@b>"}},
			contentType: "text/plain;charset=utf-8",
			content:     "line one\nline two\n",
		},
		{
			name:    "no message headers",
			body:    crlf("\nContent-Type: text/plain\n\nhi"),
			headers: nil, contentType: "text/plain", content: "hi",
		},
		{
			name:    "no MIME headers",
			body:    crlf("From: <sip:a@b>\n\n\nhi"),
			headers: []cpimHeader{{"From", "<sip:a@b>"}}, contentType: "", content: "hi",
		},
		{
			name:    "empty content",
			body:    crlf("From: <sip:a@b>\n\nContent-Type: text/plain\n\n"),
			headers: []cpimHeader{{"From", "<sip:a@b>"}}, contentType: "text/plain", content: "",
		},
		{
			name:    "header values keep colons and inner spaces",
			body:    crlf("Subject:;lang=fr  Quoi: de neuf\nNS: MyFeatures <mid:MessageFeatures@id.foo.com>\n\nContent-Type: text/plain\n\nx"),
			headers: []cpimHeader{{"Subject", ";lang=fr  Quoi: de neuf"}, {"NS", "MyFeatures <mid:MessageFeatures@id.foo.com>"}}, contentType: "text/plain", content: "x",
		},
		{name: "no blank line", body: "From: <sip:a@b>", wantErr: errCPIMNoBlank},
		{name: "no second blank line", body: crlf("From: <sip:a@b>\n\nContent-Type: text/plain\n"), wantErr: errCPIMNoBlank},
		{name: "line without colon", body: crlf("From <sip:a@b>\n\nContent-Type: text/plain\n\nx"), wantErr: errCPIMHeader},
		{name: "folded line", body: crlf("From: <sip:a@b>\n continued\n\nContent-Type: text/plain\n\nx"), wantErr: errCPIMHeader},
		{name: "bad name", body: crlf("Fr om: x\n\n\nx"), wantErr: errCPIMHeader},
		{name: "control character", body: "From: a\x00b\r\n\r\n\r\nx", wantErr: errCPIMHeader},
		{name: "too many headers", body: strings.Repeat("X: y\r\n", maxCPIMHeaders+1) + "\r\n\r\nx", wantErr: errCPIMTooMany},
		{name: "empty", body: "", wantErr: errCPIMNoBlank},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, err := parseCPIM([]byte(tt.body))
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("parseCPIM: %v, want %v", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("parseCPIM: %v", err)
			}
			if len(m.Headers) != len(tt.headers) {
				t.Fatalf("headers %q, want %q", m.Headers, tt.headers)
			}
			for i := range tt.headers {
				if m.Headers[i] != tt.headers[i] {
					t.Errorf("header %d = %q, want %q", i, m.Headers[i], tt.headers[i])
				}
			}
			if got := m.contentType(); got != tt.contentType {
				t.Errorf("content type %q, want %q", got, tt.contentType)
			}
			if string(m.Content) != tt.content {
				t.Errorf("content %q, want %q", m.Content, tt.content)
			}
		})
	}
}

// FuzzCPIM checks that the parser never panics, and that what it accepts is
// consistent: header names are tokens, values hold no line breaks, and the
// content is a suffix of the input.
func FuzzCPIM(f *testing.F) {
	f.Add([]byte("From: MR SANDERS <im:piglet@100akerwood.com>\r\nTo: <im:eeyore@100akerwood.com>\r\n\r\nContent-type: text/plain\r\n\r\nHere is the text."))
	f.Add([]byte("\n\n\nx"))
	f.Add([]byte("A:\n\nB:\n\n"))
	f.Add([]byte("From: <sip:a@b>\r\n\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n\xff\xfe"))
	f.Add([]byte(""))
	f.Fuzz(func(t *testing.T, body []byte) {
		m, err := parseCPIM(body)
		if err != nil {
			if m != nil {
				t.Fatal("a message with an error")
			}
			return
		}
		for _, h := range append(append([]cpimHeader(nil), m.Headers...), m.ContentHeaders...) {
			if !isToken(h.Name) || strings.ContainsAny(h.Value, "\r\n") {
				t.Fatalf("header %q", h)
			}
		}
		if len(m.Headers) > maxCPIMHeaders || len(m.ContentHeaders) > maxCPIMHeaders {
			t.Fatal("too many headers accepted")
		}
		if !bytes.HasSuffix(body, m.Content) {
			t.Fatalf("content %q is not the end of the body", m.Content)
		}
	})
}
