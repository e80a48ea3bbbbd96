package mapping

// Codec splits and builds the IDs of one network. Each adapter provides one
// (a JID codec, an MXID codec, a SIP URI codec), so that mapping can apply
// ghost templates without knowing any network's syntax.
type Codec interface {
	// Split returns the user and domain parts of id, or an error when id is
	// not a valid ID on the network. For a JID that is the localpart and the
	// domainpart (without resource); for an MXID the localpart and the server
	// name.
	Split(id string) (user, domain string, err error)
	// Join builds an ID from a user and a domain part. It returns an error
	// when the result would not be a valid ID on the network.
	Join(user, domain string) (string, error)
}
