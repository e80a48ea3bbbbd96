package sip

import (
	"bytes"
	"cmp"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/parleygw/parley/event"
)

// Limits of the PIDF documents parsePIDF accepts. A presence document is a
// few hundred bytes; these bound what a hostile one costs.
const (
	// maxPIDFSize bounds the document, in bytes.
	maxPIDFSize = 64 << 10
	// maxPIDFTuples bounds the <tuple> elements.
	maxPIDFTuples = 32
	// maxPIDFDepth bounds the nesting of elements, <presence> being 1.
	maxPIDFDepth = 32
)

// XML namespaces of presence documents.
const (
	// pidfNamespace is PIDF's (RFC 3863).
	pidfNamespace = "urn:ietf:params:xml:ns:pidf"
	// pidfDataModelNamespace is the data model's: <dm:person>, <dm:device>
	// (RFC 4479).
	pidfDataModelNamespace = "urn:ietf:params:xml:ns:pidf:data-model"
	// rpidNamespace is RPID's: <rpid:activities> (RFC 4480).
	rpidNamespace = "urn:ietf:params:xml:ns:pidf:rpid"
	// pidfDraftPersonNamespace is the <person> of the drafts before RFC
	// 4479, which Asterisk's chan_sip still writes (xmlns:pp).
	pidfDraftPersonNamespace = "urn:ietf:params:xml:ns:pidf:person"
	// xmlNamespace is the one of xml:lang.
	xmlNamespace = "http://www.w3.org/XML/1998/namespace"
)

// rpidDraftNamespaces are the namespaces of <activities> in the drafts
// before RFC 4480. Asterisk's chan_sip declares the first two (xmlns:ep,
// xmlns:es).
var rpidDraftNamespaces = []string{
	"urn:ietf:params:xml:ns:pidf:rpid:rpid-person",
	"urn:ietf:params:xml:ns:pidf:rpid:status:rpid-status",
	"urn:ietf:params:xml:ns:pidf:status:rpid-status",
}

// pidfSpace is XML's white space (XML 1.0 §2.3 S), which surrounds text
// in pretty-printed documents.
const pidfSpace = " \t\r\n"

var (
	errPIDFTooLarge    = fmt.Errorf("document larger than %d bytes", maxPIDFSize)
	errPIDFTooDeep     = fmt.Errorf("elements nested deeper than %d levels", maxPIDFDepth)
	errPIDFTooMany     = fmt.Errorf("more than %d tuples", maxPIDFTuples)
	errPIDFDirective   = errors.New("DOCTYPE and other declarations are not allowed")
	errPIDFNoRoot      = errors.New("no root element")
	errPIDFTwoRoots    = errors.New("more than one root element")
	errPIDFStrayText   = errors.New("text outside the root element")
	errPIDFNoEntity    = errors.New("the presence element has no entity attribute")
	errPIDFUnsupported = errors.New("unsupported encoding")
)

// pidfDoc is a parsed PIDF document (RFC 3863): the presence of one
// presentity, with the data-model elements of RFC 4479 and the RPID
// activities of RFC 4480 that Parley reads. parsePIDF skips the elements
// and attributes it does not know, in any namespace.
type pidfDoc struct {
	// Entity is the presentity's URI, a sip:, sips: or pres: URI.
	Entity string
	// Notes are the <note> children of <presence>, in document order.
	Notes []pidfNote
	// Tuples are the services (RFC 4479), in document order: at most
	// maxPIDFTuples, each with a distinct ID.
	Tuples []pidfTuple
	// Persons are the <person> elements (RFC 4479), in document order;
	// there is usually one.
	Persons []pidfPerson
	// Devices are the <dm:device> elements (RFC 4479).
	Devices []pidfDevice
}

// pidfNote is a <note>: free text for a human.
type pidfNote struct {
	// Text is the note without the XML white space around it; never empty
	// (parsePIDF drops empty notes).
	Text string
	// Lang is the xml:lang attribute, "" when absent.
	Lang string
}

// pidfTuple is a <tuple>: one way to reach the presentity (RFC 3863).
type pidfTuple struct {
	// ID is the id attribute, never empty.
	ID string
	// Open is the basic status: true for "open", false for "closed".
	Open bool
	// Contact is the <contact> URI, "" when absent.
	Contact string
	// Priority is the contact's priority in thousandths (a qvalue, "0.8"
	// is 800), or -1 when absent or malformed.
	Priority int
	// Notes are the tuple's <note> elements.
	Notes []pidfNote
	// Timestamp is the <timestamp>, zero when absent or malformed.
	Timestamp time.Time
	// DeviceID is the <dm:deviceID> that ties the service to a device.
	DeviceID string
	// Activities are RPID activities found in <status>, where the drafts
	// before RFC 4480 put them.
	Activities []rpidActivity
}

// pidfPerson is a <person>: the human behind the presentity (RFC 4479),
// in the data model's namespace, in the draft one, or unqualified as
// Kamailio's pua_xmpp writes it.
type pidfPerson struct {
	// ID is the id attribute, "" when absent.
	ID string
	// Activities are the RPID activities of every <activities> element
	// in the person, at any depth (chan_sip wraps them in <status>).
	Activities []rpidActivity
	// Notes are the person's own <dm:note> elements.
	Notes []pidfNote
	// ActivityNotes are the notes inside <activities>, and the text of
	// <rpid:other/> activities.
	ActivityNotes []pidfNote
	// Timestamp is the <dm:timestamp>, zero when absent or malformed.
	Timestamp time.Time
}

// pidfDevice is a <dm:device>: a piece of hardware (RFC 4479).
type pidfDevice struct {
	// ID is the id attribute, "" when absent.
	ID string
	// DeviceID is the <dm:deviceID> URN.
	DeviceID string
	// Notes are the device's <dm:note> elements.
	Notes []pidfNote
	// Timestamp is the <dm:timestamp>, zero when absent or malformed.
	Timestamp time.Time
}

// rpidActivity is an RPID activity (RFC 4480): the local name of an
// element of <rpid:activities>, lowercased ("away", "on-the-phone").
type rpidActivity string

// The activities state and buildPIDF use. RFC 4480 defines more; those
// that do not say whether the person can be reached (working, playing,
// tv...) leave the state to the tuples.
const (
	activityAway       rpidActivity = "away"
	activityBusy       rpidActivity = "busy"
	activityMeeting    rpidActivity = "meeting"
	activityOnThePhone rpidActivity = "on-the-phone"
	activityVacation   rpidActivity = "vacation"
	activityUnknown    rpidActivity = "unknown"
	activityOther      rpidActivity = "other"
)

// presenceState returns the state activity a implies, or false when it
// implies none:
//
//	on-the-phone                                                → on the phone
//	busy, meeting, appointment, presentation, performance       → dnd
//	vacation, holiday, travel, permanent-absence, sleeping       → xa
//	away, breakfast, lunch, dinner, meal, in-transit, shopping   → away
func (a rpidActivity) presenceState() (event.PresenceState, bool) {
	switch a {
	case activityOnThePhone:
		return event.OnThePhone, true
	case activityBusy, activityMeeting, "appointment", "presentation", "performance":
		return event.DoNotDisturb, true
	case activityVacation, "holiday", "travel", "permanent-absence", "sleeping":
		return event.ExtendedAway, true
	case activityAway, "breakfast", "lunch", "dinner", "meal", "in-transit", "shopping":
		return event.Away, true
	default:
		return event.Offline, false
	}
}

// pidfPrecedence ranks the states activities imply: when a document
// holds several activities, state keeps the one of highest rank.
func pidfPrecedence(s event.PresenceState) int {
	switch s {
	case event.OnThePhone:
		return 4
	case event.DoNotDisturb:
		return 3
	case event.ExtendedAway:
		return 2
	case event.Away:
		return 1
	default:
		return 0
	}
}

// state summarises the document in one presence state:
//
//  1. on the phone if any activity says so (RPID on-the-phone);
//  2. else do-not-disturb if any says busy (busy, meeting...);
//  3. else extended away (vacation...), then away (away, meal...);
//  4. else available if a tuple is open;
//  5. else offline: every tuple is closed, or there is none.
//
// Activities count wherever they are (every person, and tuples' status
// for the older drafts) and whatever the basic status: a phone in a call
// may close its tuple while the person is on the phone (Asterisk does).
// See rpidActivity.presenceState for which activity implies what.
func (d pidfDoc) state() event.PresenceState {
	best := event.Offline
	consider := func(acts []rpidActivity) {
		for _, a := range acts {
			if s, ok := a.presenceState(); ok && pidfPrecedence(s) > pidfPrecedence(best) {
				best = s
			}
		}
	}
	for _, p := range d.Persons {
		consider(p.Activities)
	}
	for _, t := range d.Tuples {
		consider(t.Activities)
	}
	if best != event.Offline {
		return best
	}
	for _, t := range d.Tuples {
		if t.Open {
			return event.Available
		}
	}
	return event.Offline
}

// note returns the most relevant note of the document, "" if it has none:
// the first of the persons' notes (their own <dm:note> before the notes of
// their activities), then the notes of <presence>, then the notes of the
// tuples, open tuples first, by decreasing priority, in document order
// for equal ones. Within each element the first note wins, whatever its
// xml:lang.
func (d pidfDoc) note() string {
	for _, p := range d.Persons {
		if n := firstPIDFNote(p.Notes); n != "" {
			return n
		}
	}
	for _, p := range d.Persons {
		if n := firstPIDFNote(p.ActivityNotes); n != "" {
			return n
		}
	}
	if n := firstPIDFNote(d.Notes); n != "" {
		return n
	}
	tuples := slices.Clone(d.Tuples)
	slices.SortStableFunc(tuples, func(a, b pidfTuple) int {
		if a.Open != b.Open {
			if a.Open {
				return -1
			}
			return 1
		}
		return cmp.Compare(b.Priority, a.Priority)
	})
	for _, t := range tuples {
		if n := firstPIDFNote(t.Notes); n != "" {
			return n
		}
	}
	return ""
}

// firstPIDFNote returns the text of the first note, "" if there is none.
func firstPIDFNote(notes []pidfNote) string {
	if len(notes) == 0 {
		return ""
	}
	return notes[0].Text
}

// parsePIDF parses an application/pidf+xml body: a PIDF document (RFC
// 3863) with the data-model (RFC 4479) and RPID (RFC 4480) elements that
// pidfDoc describes.
//
// It is strict on what the state depends on: the root element must be
// {urn:ietf:params:xml:ns:pidf}presence with an entity attribute holding
// a sip:, sips: or pres: URI; each tuple must have a distinct id and one
// <status> with one <basic> that is "open" or "closed" (RFC 3863 makes
// <basic> optional; Parley does not guess). It skips elements it does not
// know, in any namespace, and tolerates malformed contact priorities and
// timestamps (read as absent).
//
// It is bounded: it refuses documents larger than maxPIDFSize, with more
// than maxPIDFTuples tuples or elements nested deeper than maxPIDFDepth,
// and any <!DOCTYPE> or other declaration, so that no entity is ever
// defined (no XXE, no billion laughs); references to undefined entities
// are syntax errors. The encoding must be UTF-8, or declared US-ASCII or
// ISO-8859-1 (chan_sip's), which are converted; a UTF-8 byte order mark
// is skipped.
//
// Errors start with "pidf: " and say what is wrong ("pidf: tuple 2 has no
// basic status").
func parsePIDF(body []byte) (pidfDoc, error) {
	if len(body) > maxPIDFSize {
		return pidfDoc{}, fmt.Errorf("pidf: %w", errPIDFTooLarge)
	}
	body = bytes.TrimPrefix(body, []byte("\ufeff"))
	dec := xml.NewDecoder(bytes.NewReader(body))
	dec.Strict = true // the default; undefined entities are errors
	dec.Entity = nil  // only the five predefined entities
	dec.CharsetReader = pidfCharsetReader
	p := &pidfParser{dec: dec}
	doc, err := p.document()
	if err != nil {
		return pidfDoc{}, fmt.Errorf("pidf: %w", err)
	}
	return doc, nil
}

// pidfCharsetReader converts the documents that declare US-ASCII or
// ISO-8859-1 to UTF-8 (US-ASCII read as ISO-8859-1, which contains it);
// the decoder refuses any other encoding but UTF-8 with the error it
// returns. The input is in memory and at most maxPIDFSize bytes.
func pidfCharsetReader(label string, r io.Reader) (io.Reader, error) {
	switch strings.ToLower(label) {
	case "us-ascii", "ascii", "iso-8859-1", "iso_8859-1", "latin1", "l1":
	default:
		return nil, errPIDFUnsupported
	}
	in, err := io.ReadAll(r)
	if err != nil {
		return nil, err
	}
	out := make([]byte, 0, len(in)+len(in)/8)
	for _, c := range in {
		out = utf8.AppendRune(out, rune(c))
	}
	return bytes.NewReader(out), nil
}

// pidfParser reads a PIDF document token by token.
type pidfParser struct {
	dec *xml.Decoder
	// depth is the number of open elements.
	depth int
}

// token returns the next token, counting open elements and refusing
// elements deeper than maxPIDFDepth and directives (<!DOCTYPE>,
// <!ENTITY>...).
func (p *pidfParser) token() (xml.Token, error) {
	tok, err := p.dec.Token()
	if err != nil {
		return nil, err
	}
	switch tok.(type) {
	case xml.StartElement:
		p.depth++
		if p.depth > maxPIDFDepth {
			return nil, errPIDFTooDeep
		}
	case xml.EndElement:
		p.depth--
	case xml.Directive:
		return nil, errPIDFDirective
	}
	return tok, nil
}

// content reads the content of the element whose start tag was just
// read, up to and including its end tag, and returns its character data
// (not its children's). It calls child for each child element; child
// must read it up to its end tag, as skip does. A nil child skips them.
func (p *pidfParser) content(child func(xml.StartElement) error) (string, error) {
	var text strings.Builder
	for {
		tok, err := p.token()
		if errors.Is(err, io.EOF) {
			return "", io.ErrUnexpectedEOF
		}
		if err != nil {
			return "", err
		}
		switch t := tok.(type) {
		case xml.StartElement:
			if child == nil {
				err = p.skip()
			} else {
				err = child(t)
			}
			if err != nil {
				return "", err
			}
		case xml.EndElement:
			return text.String(), nil
		case xml.CharData:
			text.Write(t)
		}
	}
}

// skip reads the element whose start tag was just read, up to and
// including its end tag.
func (p *pidfParser) skip() error {
	_, err := p.content(nil)
	return err
}

// text reads the element whose start tag was just read and returns its
// character data without the white space around it.
func (p *pidfParser) text() (string, error) {
	s, err := p.content(nil)
	return strings.Trim(s, pidfSpace), err
}

// document reads the whole document: the prolog, the <presence> element
// and what follows it.
func (p *pidfParser) document() (pidfDoc, error) {
	var root xml.StartElement
	for root.Name.Local == "" {
		tok, err := p.token()
		if errors.Is(err, io.EOF) {
			return pidfDoc{}, errPIDFNoRoot
		}
		if err != nil {
			return pidfDoc{}, err
		}
		switch t := tok.(type) {
		case xml.StartElement:
			root = t
		case xml.CharData:
			if len(bytes.Trim(t, pidfSpace)) != 0 {
				return pidfDoc{}, errPIDFStrayText
			}
		}
		// Comments and processing instructions (<?xml ...?>) are fine.
	}
	doc, err := p.presence(root)
	if err != nil {
		return pidfDoc{}, err
	}
	for {
		tok, err := p.token()
		if errors.Is(err, io.EOF) {
			return doc, nil
		}
		if err != nil {
			return pidfDoc{}, err
		}
		switch t := tok.(type) {
		case xml.StartElement:
			return pidfDoc{}, errPIDFTwoRoots
		case xml.CharData:
			if len(bytes.Trim(t, pidfSpace)) != 0 {
				return pidfDoc{}, errPIDFStrayText
			}
		}
	}
}

// presence reads the root element, whose start tag was just read.
func (p *pidfParser) presence(el xml.StartElement) (pidfDoc, error) {
	if el.Name != (xml.Name{Space: pidfNamespace, Local: "presence"}) {
		name := el.Name.Local + " in no namespace"
		if el.Name.Space != "" {
			name = "{" + el.Name.Space + "}" + el.Name.Local
		}
		return pidfDoc{}, fmt.Errorf("the root element is %s, not {%s}presence", pidfClip(name), pidfNamespace)
	}
	entity, ok := pidfAttr(el, "", "entity")
	entity = strings.Trim(entity, pidfSpace)
	if !ok || entity == "" {
		return pidfDoc{}, errPIDFNoEntity
	}
	if !validPIDFEntity(entity) {
		return pidfDoc{}, fmt.Errorf("entity %q is not a sip:, sips: or pres: URI", pidfClip(entity))
	}
	doc := pidfDoc{Entity: entity}
	ids := make(map[string]bool)
	_, err := p.content(func(c xml.StartElement) error {
		switch c.Name {
		case xml.Name{Space: pidfNamespace, Local: "tuple"}:
			n := len(doc.Tuples) + 1
			if n > maxPIDFTuples {
				return errPIDFTooMany
			}
			t, err := p.tuple(c, n)
			if err != nil {
				return err
			}
			if ids[t.ID] {
				return fmt.Errorf("tuple %d repeats the id %q", n, pidfClip(t.ID))
			}
			ids[t.ID] = true
			doc.Tuples = append(doc.Tuples, t)
			return nil
		case xml.Name{Space: pidfNamespace, Local: "note"}:
			return p.note(c, &doc.Notes)
		case xml.Name{Space: pidfDataModelNamespace, Local: "person"},
			xml.Name{Space: pidfDraftPersonNamespace, Local: "person"},
			xml.Name{Space: pidfNamespace, Local: "person"}:
			person, err := p.person(c)
			if err != nil {
				return err
			}
			doc.Persons = append(doc.Persons, person)
			return nil
		case xml.Name{Space: pidfDataModelNamespace, Local: "device"}:
			device, err := p.device(c)
			if err != nil {
				return err
			}
			doc.Devices = append(doc.Devices, device)
			return nil
		default:
			return p.skip()
		}
	})
	if err != nil {
		return pidfDoc{}, err
	}
	return doc, nil
}

// tuple reads the n-th <tuple> (from 1), whose start tag was just read.
func (p *pidfParser) tuple(el xml.StartElement, n int) (pidfTuple, error) {
	id, _ := pidfAttr(el, "", "id")
	t := pidfTuple{ID: strings.Trim(id, pidfSpace), Priority: -1}
	if t.ID == "" {
		return pidfTuple{}, fmt.Errorf("tuple %d has no id", n)
	}
	statuses, basics := 0, 0
	_, err := p.content(func(c xml.StartElement) error {
		switch c.Name {
		case xml.Name{Space: pidfNamespace, Local: "status"}:
			if statuses++; statuses > 1 {
				return fmt.Errorf("tuple %d has more than one status", n)
			}
			_, err := p.content(func(s xml.StartElement) error {
				switch {
				case s.Name == xml.Name{Space: pidfNamespace, Local: "basic"}:
					if basics++; basics > 1 {
						return fmt.Errorf("tuple %d has more than one basic status", n)
					}
					v, err := p.text()
					if err != nil {
						return err
					}
					switch v {
					case "open":
						t.Open = true
					case "closed":
					default:
						return fmt.Errorf("tuple %d has the basic status %q, not open or closed", n, pidfClip(v))
					}
					return nil
				case s.Name.Local == "activities" && isRPIDNamespace(s.Name.Space):
					return p.activities(&t.Activities, nil)
				default:
					return p.skip()
				}
			})
			return err
		case xml.Name{Space: pidfNamespace, Local: "contact"}:
			v, err := p.text()
			if err == nil && t.Contact == "" {
				prio, _ := pidfAttr(c, "", "priority")
				t.Contact, t.Priority = v, parseQValue(prio)
			}
			return err
		case xml.Name{Space: pidfNamespace, Local: "note"}:
			return p.note(c, &t.Notes)
		case xml.Name{Space: pidfNamespace, Local: "timestamp"}:
			return p.timestamp(&t.Timestamp)
		case xml.Name{Space: pidfDataModelNamespace, Local: "deviceID"}:
			v, err := p.text()
			t.DeviceID = v
			return err
		default:
			return p.skip()
		}
	})
	if err != nil {
		return pidfTuple{}, err
	}
	if basics == 0 {
		return pidfTuple{}, fmt.Errorf("tuple %d has no basic status", n)
	}
	return t, nil
}

// person reads a <person>, whose start tag was just read.
func (p *pidfParser) person(el xml.StartElement) (pidfPerson, error) {
	id, _ := pidfAttr(el, "", "id")
	person := pidfPerson{ID: strings.Trim(id, pidfSpace)}
	// deeper looks for <activities> in the other elements, at any depth:
	// chan_sip writes <pp:person><status><ep:activities>.
	var deeper func(xml.StartElement) error
	deeper = func(c xml.StartElement) error {
		if c.Name.Local == "activities" && isRPIDNamespace(c.Name.Space) {
			return p.activities(&person.Activities, &person.ActivityNotes)
		}
		_, err := p.content(deeper)
		return err
	}
	_, err := p.content(func(c xml.StartElement) error {
		switch c.Name {
		case xml.Name{Space: pidfDataModelNamespace, Local: "note"},
			xml.Name{Space: pidfNamespace, Local: "note"}:
			return p.note(c, &person.Notes)
		case xml.Name{Space: pidfDataModelNamespace, Local: "timestamp"}:
			return p.timestamp(&person.Timestamp)
		default:
			return deeper(c)
		}
	})
	return person, err
}

// device reads a <dm:device>, whose start tag was just read.
func (p *pidfParser) device(el xml.StartElement) (pidfDevice, error) {
	id, _ := pidfAttr(el, "", "id")
	device := pidfDevice{ID: strings.Trim(id, pidfSpace)}
	_, err := p.content(func(c xml.StartElement) error {
		switch c.Name {
		case xml.Name{Space: pidfDataModelNamespace, Local: "deviceID"}:
			v, err := p.text()
			device.DeviceID = v
			return err
		case xml.Name{Space: pidfDataModelNamespace, Local: "note"}:
			return p.note(c, &device.Notes)
		case xml.Name{Space: pidfDataModelNamespace, Local: "timestamp"}:
			return p.timestamp(&device.Timestamp)
		default:
			return p.skip()
		}
	})
	return device, err
}

// activities reads an <activities> element, whose start tag was just
// read, appending its activities to acts and its notes to notes (when not
// nil). It reads RFC 4480's form, an empty element per activity
// (<rpid:away/>), and two older ones: <activity>away</activity> (the
// drafts) and the activity as text with a prefix ("ep:busy", Asterisk's
// res_pjsip at one time). <rpid:other>text</rpid:other> is the activity
// "other" and its text a note.
func (p *pidfParser) activities(acts *[]rpidActivity, notes *[]pidfNote) error {
	text, err := p.content(func(c xml.StartElement) error {
		if !isRPIDNamespace(c.Name.Space) {
			return p.skip()
		}
		switch c.Name.Local {
		case "note":
			if notes == nil {
				return p.skip()
			}
			return p.note(c, notes)
		case "activity":
			v, err := p.text()
			if a := rpidActivityToken(v); a != "" {
				*acts = append(*acts, a)
			}
			return err
		case "other":
			*acts = append(*acts, activityOther)
			if notes == nil {
				return p.skip()
			}
			return p.note(c, notes)
		default:
			*acts = append(*acts, rpidActivity(strings.ToLower(c.Name.Local)))
			return p.skip()
		}
	})
	for _, f := range strings.Fields(text) {
		if a := rpidActivityToken(f); a != "" {
			*acts = append(*acts, a)
		}
	}
	return err
}

// rpidActivityToken returns the activity that the text s names, without
// a "prefix:" and lowercased.
func rpidActivityToken(s string) rpidActivity {
	s = strings.Trim(s, pidfSpace)
	if i := strings.LastIndexByte(s, ':'); i >= 0 {
		s = s[i+1:]
	}
	return rpidActivity(strings.ToLower(s))
}

// note reads a <note>, whose start tag was just read, and appends it to
// notes unless it is empty.
func (p *pidfParser) note(el xml.StartElement, notes *[]pidfNote) error {
	v, err := p.text()
	if err != nil {
		return err
	}
	if v != "" {
		lang, _ := pidfAttr(el, xmlNamespace, "lang")
		*notes = append(*notes, pidfNote{Text: v, Lang: lang})
	}
	return nil
}

// timestamp reads a <timestamp> (xs:dateTime, RFC 3339 in practice),
// whose start tag was just read. A malformed one leaves ts zero.
func (p *pidfParser) timestamp(ts *time.Time) error {
	v, err := p.text()
	if err != nil {
		return err
	}
	if t, err := time.Parse(time.RFC3339Nano, v); err == nil {
		*ts = t
	}
	return nil
}

// pidfAttr returns the value of el's attribute {space}local, and whether
// el has it.
func pidfAttr(el xml.StartElement, space, local string) (string, bool) {
	for _, a := range el.Attr {
		if a.Name.Space == space && a.Name.Local == local {
			return a.Value, true
		}
	}
	return "", false
}

// isRPIDNamespace reports whether ns is RPID's or one of its drafts'.
func isRPIDNamespace(ns string) bool {
	return ns == rpidNamespace || slices.Contains(rpidDraftNamespaces, ns)
}

// validPIDFEntity reports whether s is a sip:, sips: or pres: URI (the
// scheme in any case): something after the colon, all printable ASCII
// without space, '"', '<' or '>'. It checks no more of the URI's syntax.
func validPIDFEntity(s string) bool {
	scheme, rest, ok := strings.Cut(s, ":")
	if !ok || rest == "" {
		return false
	}
	switch strings.ToLower(scheme) {
	case "sip", "sips", "pres":
	default:
		return false
	}
	for i := 0; i < len(rest); i++ {
		c := rest[i]
		if c <= ' ' || c >= 0x7f || c == '"' || c == '<' || c == '>' {
			return false
		}
	}
	return true
}

// parseQValue returns a contact priority (RFC 3863: a qvalue from 0 to
// 1) in thousandths, or -1 when s is empty or not a number in that
// range. It accepts more digits than the grammar's three ("0.800000").
func parseQValue(s string) int {
	s = strings.Trim(s, pidfSpace)
	if s == "" || strings.ContainsAny(s, "eE+-xXpP_") {
		return -1
	}
	q, err := strconv.ParseFloat(s, 64)
	if err != nil || q < 0 || q > 1 {
		return -1
	}
	return int(q*1000 + 0.5)
}

// pidfClip shortens s to at most 64 bytes, on a rune boundary, for an
// error message.
func pidfClip(s string) string {
	const n = 64
	if len(s) <= n {
		return s
	}
	i := n
	for i > 0 && !utf8.RuneStart(s[i]) {
		i--
	}
	return s[:i] + "…"
}

// pidfActivity returns the RPID activity buildPIDF writes for s, "" for
// none: away as <rpid:away/>, xa as <rpid:vacation/> (RPID has no
// "extended away"; vacation is the activity that maps back to it), dnd
// as <rpid:busy/>, on the phone as <rpid:on-the-phone/>.
func pidfActivity(s event.PresenceState) rpidActivity {
	switch s {
	case event.Away:
		return activityAway
	case event.ExtendedAway:
		return activityVacation
	case event.DoNotDisturb:
		return activityBusy
	case event.OnThePhone:
		return activityOnThePhone
	default:
		return ""
	}
}

// buildPIDF returns a PIDF document (RFC 3863) for entity, which must be
// a sip:, sips: or pres: URI (buildPIDF does not check it), in state st:
// one tuple, id "parley", whose basic status is closed when st is
// event.Offline (or not a known state) and open otherwise, with contact
// as its <contact> and note, without the white space around it, as its
// <note> (each omitted when empty); and, when st needs one, a
// <dm:person> with an RPID activity (see pidfActivity). Text is escaped;
// characters XML cannot carry become U+FFFD.
//
// parsePIDF reads the document back with st as its state and the trimmed
// note as its note.
func buildPIDF(entity string, st event.PresenceState, note, contact string) []byte {
	var b bytes.Buffer
	b.Grow(512 + 2*(len(entity)+len(note)+len(contact))) // one allocation for the usual document
	esc := func(s string) {
		if plainXMLText(s) {
			b.WriteString(s) // nothing to escape
			return
		}
		_ = xml.EscapeText(&b, []byte(s)) // writes to a bytes.Buffer do not fail
	}
	activity := pidfActivity(st)
	basic := "closed"
	if st == event.Available || activity != "" {
		basic = "open"
	}
	b.WriteString(xml.Header)
	b.WriteString(`<presence xmlns="` + pidfNamespace + `"`)
	if activity != "" {
		b.WriteString(` xmlns:dm="` + pidfDataModelNamespace + `" xmlns:rpid="` + rpidNamespace + `"`)
	}
	b.WriteString(` entity="`)
	esc(entity)
	b.WriteString("\">\n")
	b.WriteString(` <tuple id="parley"><status><basic>` + basic + `</basic></status>`)
	if contact != "" {
		b.WriteString("<contact>")
		esc(contact)
		b.WriteString("</contact>")
	}
	if note = strings.Trim(note, pidfSpace); note != "" {
		b.WriteString("<note>")
		esc(note)
		b.WriteString("</note>")
	}
	b.WriteString("</tuple>\n")
	if activity != "" {
		b.WriteString(` <dm:person id="p"><rpid:activities><rpid:` + string(activity) + `/></rpid:activities></dm:person>` + "\n")
	}
	b.WriteString("</presence>\n")
	return b.Bytes()
}

// plainXMLText reports whether s is printable ASCII that XML text takes as
// it is: nothing for xml.EscapeText to escape or replace.
func plainXMLText(s string) bool {
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c < 0x20 || c > 0x7e, c == '&', c == '<', c == '>', c == '"', c == '\'':
			return false
		}
	}
	return true
}
