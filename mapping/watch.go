package mapping

import (
	"fmt"
	"path"

	"github.com/parleygw/parley/event"
)

// WatchRule is one rule of the presence policy: who may watch whose
// presence. Watcher and Presentity are patterns over "network:id" addresses
// ("sip:sip:*@parley.example.org", "xmpp:*@example.org", "*"), where '*'
// matches any run of characters and '?' one character; Allow says what a
// matching subscription gets.
type WatchRule struct {
	Watcher    string `yaml:"watcher"`
	Presentity string `yaml:"presentity"`
	Allow      bool   `yaml:"allow"`
}

// Validate checks the patterns of r.
func (r WatchRule) Validate() error {
	for _, p := range []string{r.Watcher, r.Presentity} {
		if p == "" {
			return fmt.Errorf("pattern is empty; use \"*\" for everyone")
		}
		if _, err := path.Match(p, ""); err != nil {
			return fmt.Errorf("pattern %q: %w", p, err)
		}
	}
	return nil
}

// MayWatch reports whether watcher may watch the presence of presentity,
// both real addresses. The rules of the presence policy are tried in order
// and the first that matches decides; with none matching, watching is
// allowed (presence is what gateways are for).
func (m *Map) MayWatch(watcher, presentity event.Address) bool {
	w, p := watcher.String(), presentity.String()
	for _, r := range m.watch {
		if match(r.Watcher, w) && match(r.Presentity, p) {
			return r.Allow
		}
	}
	return true
}

// match is path.Match with '*' crossing '/' too (JIDs and URIs may hold
// it): both names are matched as one path element.
func match(pattern, name string) bool {
	ok, _ := path.Match(pattern, name)
	return ok
}
