package matrix

import (
	"errors"
	"fmt"
	"strings"

	"maunium.net/go/mautrix/id"
)

// AddressCodec splits and builds Matrix user IDs (MXIDs, "@localpart:server")
// for the identity mapping. It implements mapping.Codec; the zero value is
// ready to use.
//
// Split accepts the historical user IDs the spec still tolerates (any
// printable ASCII but ':' in the localpart, Matrix spec §"User Identifiers",
// "Historical User IDs"); Join produces only IDs of the current grammar
// (localpart of a-z, 0-9, ".", "_", "=", "-", "/", "+").
type AddressCodec struct{}

var (
	errNotUserID     = errors.New("not a user ID (want @localpart:server)")
	errEmptyLocal    = errors.New("empty localpart")
	errLocalChars    = errors.New("localpart has characters a user ID may not have (allowed: a-z 0-9 . _ = - / +)")
	errHistoric      = errors.New("localpart has characters that are not printable ASCII")
	errServerName    = errors.New("invalid server name")
	errUserIDTooLong = fmt.Errorf("longer than %d bytes", id.UserIDMaxLength)
)

// Split returns the localpart and server name of mxid.
func (AddressCodec) Split(mxid string) (user, server string, err error) {
	if len(mxid) > id.UserIDMaxLength {
		return "", "", fmt.Errorf("split MXID: %w", errUserIDTooLong)
	}
	rest, ok := strings.CutPrefix(mxid, "@")
	if !ok {
		return "", "", fmt.Errorf("split MXID %q: %w", mxid, errNotUserID)
	}
	user, server, ok = strings.Cut(rest, ":")
	if !ok {
		return "", "", fmt.Errorf("split MXID %q: %w", mxid, errNotUserID)
	}
	if err := checkHistoricLocalpart(user); err != nil {
		return "", "", fmt.Errorf("split MXID %q: %w", mxid, err)
	}
	if !id.ValidateServerName(server) {
		return "", "", fmt.Errorf("split MXID %q: %w", mxid, errServerName)
	}
	return user, server, nil
}

// Join builds "@user:server". It fails when user is not a localpart of the
// current grammar, server is not a server name, or the ID would be too long.
func (AddressCodec) Join(user, server string) (string, error) {
	if user == "" {
		return "", fmt.Errorf("join MXID: %w", errEmptyLocal)
	}
	if !id.ValidLocalpartRegex.MatchString(user) {
		return "", fmt.Errorf("join MXID from %q: %w", user, errLocalChars)
	}
	if !id.ValidateServerName(server) {
		return "", fmt.Errorf("join MXID with server %q: %w", server, errServerName)
	}
	mxid := "@" + user + ":" + server
	if len(mxid) > id.UserIDMaxLength {
		return "", fmt.Errorf("join MXID %q: %w", mxid, errUserIDTooLong)
	}
	return mxid, nil
}

// checkHistoricLocalpart accepts the localparts of historical user IDs:
// non-empty, printable ASCII (0x21-0x7E) without ':'.
func checkHistoricLocalpart(s string) error {
	if s == "" {
		return errEmptyLocal
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x21 || c > 0x7e || c == ':' {
			return errHistoric
		}
	}
	return nil
}

// validUserID reports whether s is a user ID Split accepts.
func validUserID(s string) bool {
	_, _, err := AddressCodec{}.Split(s)
	return err == nil
}
