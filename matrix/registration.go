package matrix

import (
	"fmt"
	"regexp"

	"maunium.net/go/mautrix/appservice"
)

// Registration returns the application service registration file (YAML) that
// the homeserver must load for cfg (Matrix spec, Application Service API,
// "Registration"): the tokens, the bot as sender_localpart, an exclusive
// user namespace for every Config.Namespaces entry and for the bot, and an
// exclusive alias namespace for the aliases that name MUCs (portals on
// demand, ondemand.go). It asks
// the homeserver for ephemeral events (typing, receipts, presence: MSC2409)
// and not to rate-limit the ghosts. `parley gen-registration` writes it.
func Registration(cfg Config) ([]byte, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("generate registration: %w", err)
	}
	cfg = cfg.withDefaults()
	rateLimited := false
	reg := appservice.Registration{
		ID:                  cfg.ID,
		URL:                 cfg.URL,
		AppToken:            cfg.ASToken,
		ServerToken:         cfg.HSToken,
		SenderLocalpart:     cfg.BotLocalpart,
		RateLimited:         &rateLimited,
		SoruEphemeralEvents: true,
		EphemeralEvents:     true,
	}
	for _, ns := range cfg.Namespaces {
		reg.Namespaces.UserIDs = append(reg.Namespaces.UserIDs, appservice.Namespace{Regex: ns, Exclusive: true})
	}
	reg.Namespaces.UserIDs = append(reg.Namespaces.UserIDs, appservice.Namespace{
		Regex:     "^" + regexp.QuoteMeta(botID(cfg).String()) + "$",
		Exclusive: true,
	})
	reg.Namespaces.RoomAliases = append(reg.Namespaces.RoomAliases, appservice.Namespace{
		Regex:     mucAliasNamespace(cfg.ServerName),
		Exclusive: true,
	})
	out, err := reg.YAML()
	if err != nil {
		return nil, fmt.Errorf("generate registration: %w", err)
	}
	return []byte(out), nil
}
