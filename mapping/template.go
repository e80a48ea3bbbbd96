package mapping

import (
	"fmt"
	"github.com/parleygw/parley/internal/escape"
	"regexp"
	"strings"
)

// template is a reversible pattern for addresses, such as
// "@_xmpp_{user}_{domain}:localhost" (a ghost template, with two escaped
// values) or "{name}@matrix.localhost" (an alias template, with one).
type template struct {
	raw    string
	prefix string
	sep    string // between the two values; "" for one-value templates
	suffix string
}

// parseTemplate parses raw, which must hold the given placeholders exactly
// once each and in that order. Between two placeholders there must be a
// separator with a character that escaped values never contain.
func parseTemplate(raw string, placeholders ...string) (template, error) {
	t := template{raw: raw}
	rest := raw
	for i, p := range placeholders {
		if strings.Count(raw, p) != 1 {
			return t, fmt.Errorf("template %q must contain %s exactly once", raw, p)
		}
		before, after, _ := strings.Cut(rest, p)
		switch i {
		case 0:
			t.prefix = before
		default:
			if !separates(before) {
				return t, fmt.Errorf("template %q: the text between %s and %s must contain a character other than a-z, 0-9, '.', '-' and '='",
					raw, placeholders[i-1], p)
			}
			t.sep = before
		}
		rest = after
	}
	if strings.Contains(rest, "{") {
		return t, fmt.Errorf("template %q has an unknown placeholder (only %s)", raw, strings.Join(placeholders, ", "))
	}
	t.suffix = rest
	return t, nil
}

func separates(s string) bool {
	for i := 0; i < len(s); i++ {
		if !escape.Plain(s[i]) && s[i] != escape.Introducer {
			return true
		}
	}
	return false
}

// format fills the template with escaped values.
func (t template) format(values ...string) string {
	var b strings.Builder
	b.WriteString(t.prefix)
	for i, v := range values {
		if i > 0 {
			b.WriteString(t.sep)
		}
		b.WriteString(escape.Encode(v))
	}
	b.WriteString(t.suffix)
	return b.String()
}

// parse reverses format: it returns the n unescaped values, or false when id
// does not match the template.
func (t template) parse(id string, n int) ([]string, bool) {
	if len(id) < len(t.prefix)+len(t.suffix) || !strings.HasPrefix(id, t.prefix) || !strings.HasSuffix(id, t.suffix) {
		return nil, false
	}
	body := id[len(t.prefix) : len(id)-len(t.suffix)]
	var parts []string
	if n == 1 {
		parts = []string{body}
	} else {
		parts = strings.SplitN(body, t.sep, n)
		if len(parts) != n {
			return nil, false
		}
	}
	for i, p := range parts {
		v, ok := escape.Decode(p)
		if !ok || v == "" {
			return nil, false
		}
		parts[i] = v
	}
	return parts, true
}

// pattern returns a regular expression matching every ID the template can
// produce, for registrations such as a Matrix appservice namespace.
func (t template) pattern() string {
	return regexp.QuoteMeta(t.prefix) + ".+" + regexp.QuoteMeta(t.suffix)
}
