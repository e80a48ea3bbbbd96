package sip

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/parleygw/parley/event"
)

// pidfSamples are the documents in testdata/pidf with what parsePIDF makes
// of them: the state and note of the summary and the number of tuples, or
// the error (matched as a substring; exactly, for Parley's own).
var pidfSamples = []struct {
	file    string
	state   event.PresenceState
	note    string
	tuples  int
	wantErr string
}{
	// RFC 3863: a prefixed namespace, extensions in <status> and elsewhere.
	{file: "rfc3863_basic.xml", state: event.Available, tuples: 1},
	{file: "rfc3863_extensions.xml", state: event.Available, note: "I'll be in Tokyo next week", tuples: 2},
	// RFC 4480's example: the person's own note wins over its activity's.
	{file: "rfc4480_away.xml", state: event.Away, note: "Scoring 120", tuples: 3},
	{file: "rpid_meeting.xml", state: event.DoNotDisturb, note: "Design review until 15:00", tuples: 1},
	{file: "rpid_on_the_phone.xml", state: event.OnThePhone, tuples: 1},
	{file: "rpid_vacation_closed.xml", state: event.ExtendedAway, note: "Back on Monday", tuples: 1},
	{file: "rpid_unknown.xml", state: event.Available, tuples: 1},
	{file: "rpid_other.xml", state: event.Available, note: "Doing the laundry", tuples: 1},
	// Kamailio: pua_usrloc on REGISTER, pua_xmpp for an XMPP <show>away</show>.
	{file: "kamailio_pua_usrloc.xml", state: event.Available, tuples: 1},
	{file: "kamailio_pua_xmpp.xml", state: event.Available, note: "away", tuples: 1},
	// Asterisk: res_pjsip (tuple closed while in use), chan_sip (old
	// namespaces, ISO-8859-1), res_pjsip's old eyebeam supplement (activity
	// as text), and the Digium phones' extra tuple, which has no basic status.
	{file: "asterisk_pjsip_in_use.xml", state: event.OnThePhone, note: "On the phone", tuples: 1},
	{file: "asterisk_chan_sip_unavailable.xml", state: event.Away, note: "Unavailable", tuples: 1},
	{file: "asterisk_chan_sip_busy.xml", state: event.DoNotDisturb, note: "Occupé", tuples: 1},
	{file: "asterisk_pjsip_eyebeam_text.xml", state: event.OnThePhone, note: "Ringing", tuples: 1},
	{file: "asterisk_digium_presence.xml", wantErr: "pidf: tuple 2 has no basic status"},
	// RPID drafts: <activity>text</activity>, activities in a tuple's status.
	{file: "draft_rpid_activity.xml", state: event.Away, tuples: 1},
	{file: "draft_rpid_tuple_status.xml", state: event.OnThePhone, tuples: 1},
	// Several tuples: an open one wins, then priority.
	{file: "multi_tuple.xml", state: event.Available, note: "Desk phone", tuples: 2},
	{file: "all_closed.xml", state: event.Offline, note: "Gone home", tuples: 2},
	{file: "no_tuples.xml", state: event.Offline},
	{file: "note_escaped.xml", state: event.Available, note: "Lunch & errands <back at 2> ☺ <& more>", tuples: 1},
	{file: "utf8_bom.xml", state: event.Available, tuples: 1},

	{file: "no_entity.xml", wantErr: "pidf: the presence element has no entity attribute"},
	{file: "bad_entity.xml", wantErr: `pidf: entity "mailto:nina@example.com" is not a sip:, sips: or pres: URI`},
	{file: "wrong_namespace.xml", wantErr: "pidf: the root element is {urn:ietf:params:xml:ns:cpim-pidf}presence, not {urn:ietf:params:xml:ns:pidf}presence"},
	{file: "no_namespace.xml", wantErr: "pidf: the root element is presence in no namespace, not {urn:ietf:params:xml:ns:pidf}presence"},
	{file: "dialog_info.xml", wantErr: "pidf: the root element is {urn:ietf:params:xml:ns:dialog-info}dialog-info, not"},
	{file: "doctype_billion_laughs.xml", wantErr: "pidf: DOCTYPE and other declarations are not allowed"},
	{file: "doctype_xxe.xml", wantErr: "pidf: DOCTYPE and other declarations are not allowed"},
	{file: "undefined_entity.xml", wantErr: "invalid character entity &xxe;"},
	{file: "huge.xml", wantErr: "pidf: document larger than 65536 bytes"},
	{file: "deep.xml", wantErr: "pidf: elements nested deeper than 32 levels"},
	{file: "too_many_tuples.xml", wantErr: "pidf: more than 32 tuples"},
	{file: "tuple_no_status.xml", wantErr: "pidf: tuple 2 has no basic status"},
	{file: "tuple_no_id.xml", wantErr: "pidf: tuple 1 has no id"},
	{file: "bad_basic.xml", wantErr: `pidf: tuple 1 has the basic status "close", not open or closed`},
	{file: "duplicate_tuple_id.xml", wantErr: `pidf: tuple 3 repeats the id "x"`},
	{file: "two_basic.xml", wantErr: "pidf: tuple 1 has more than one basic status"},
	{file: "truncated.xml", wantErr: "unexpected EOF"},
	{file: "utf16_declared.xml", wantErr: `pidf: xml: opening charset "UTF-16": unsupported encoding`},
	{file: "two_roots.xml", wantErr: "pidf: more than one root element"},
	{file: "not_xml.xml", wantErr: "pidf: text outside the root element"},
	{file: "empty.xml", wantErr: "pidf: no root element"},
}

func readPIDFSample(t testing.TB, file string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", "pidf", file))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestParsePIDFSamples(t *testing.T) {
	for _, tt := range pidfSamples {
		t.Run(strings.TrimSuffix(tt.file, ".xml"), func(t *testing.T) {
			d, err := parsePIDF(readPIDFSample(t, tt.file))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("parsePIDF: %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("parsePIDF: %v", err)
			}
			if got := d.state(); got != tt.state {
				t.Errorf("state %s, want %s", got, tt.state)
			}
			if got := d.note(); got != tt.note {
				t.Errorf("note %q, want %q", got, tt.note)
			}
			if len(d.Tuples) != tt.tuples {
				t.Errorf("%d tuples, want %d", len(d.Tuples), tt.tuples)
			}
		})
	}
}

// TestPIDFSamplesListed keeps pidfSamples and testdata/pidf in step.
func TestPIDFSamplesListed(t *testing.T) {
	files, err := filepath.Glob(filepath.Join("testdata", "pidf", "*.xml"))
	if err != nil {
		t.Fatal(err)
	}
	listed := make(map[string]bool)
	for _, s := range pidfSamples {
		if listed[s.file] {
			t.Errorf("%s listed twice", s.file)
		}
		listed[s.file] = true
	}
	for _, f := range files {
		if !listed[filepath.Base(f)] {
			t.Errorf("%s is not in pidfSamples", f)
		}
		delete(listed, filepath.Base(f))
	}
	for f := range listed {
		t.Errorf("%s is listed but not in testdata/pidf", f)
	}
}

func TestParsePIDFFields(t *testing.T) {
	d, err := parsePIDF(readPIDFSample(t, "rfc4480_away.xml"))
	if err != nil {
		t.Fatal(err)
	}
	if d.Entity != "pres:someone@example.com" {
		t.Errorf("entity %q", d.Entity)
	}
	if len(d.Notes) != 1 || d.Notes[0] != (pidfNote{Text: "I'll be in Tokyo next week"}) {
		t.Errorf("notes %q", d.Notes)
	}
	t0 := d.Tuples[0]
	if t0.ID != "bs35r9" || !t0.Open || t0.Contact != "im:someone@mobile.example.net" || t0.Priority != 800 ||
		t0.DeviceID != "urn:device:0003ba4811e3" || !t0.Timestamp.Equal(time.Date(2005, 10, 27, 16, 49, 29, 0, time.UTC)) {
		t.Errorf("tuple 1 = %+v", t0)
	}
	wantNotes := []pidfNote{{"Don't Disturb Me!", "en"}, {"Ne derangez pas, s'il vous plait", "fr"}}
	if fmt.Sprint(t0.Notes) != fmt.Sprint(wantNotes) {
		t.Errorf("tuple 1 notes %q, want %q", t0.Notes, wantNotes)
	}
	if d.Tuples[1].Priority != 1000 || d.Tuples[2].ID != "eg92n8" {
		t.Errorf("tuples 2 and 3 = %+v", d.Tuples[1:])
	}
	if len(d.Persons) != 1 {
		t.Fatalf("persons %+v", d.Persons)
	}
	p := d.Persons[0]
	// <rpid:other> in <rpid:mood> is a mood, not an activity.
	if p.ID != "p1" || fmt.Sprint(p.Activities) != "[away]" {
		t.Errorf("person %+v", p)
	}
	if fmt.Sprint(p.Notes) != "[{Scoring 120 }]" || fmt.Sprint(p.ActivityNotes) != "[{Far away }]" {
		t.Errorf("person notes %q, activity notes %q", p.Notes, p.ActivityNotes)
	}
	if !p.Timestamp.Equal(time.Date(2005, 5, 30, 11, 9, 44, 0, time.UTC)) {
		t.Errorf("person timestamp %s", p.Timestamp)
	}
	if len(d.Devices) != 1 || d.Devices[0].ID != "pc147" || d.Devices[0].DeviceID != "urn:device:0003ba4811e3" ||
		fmt.Sprint(d.Devices[0].Notes) != "[{PC }]" {
		t.Errorf("devices %+v", d.Devices)
	}

	d, err = parsePIDF(readPIDFSample(t, "asterisk_pjsip_in_use.xml"))
	if err != nil {
		t.Fatal(err)
	}
	if d.Entity != "sip:1001@pbx.example.com" || len(d.Tuples) != 1 || d.Tuples[0].Open ||
		d.Tuples[0].Contact != "sip:1001@192.0.2.20:5060" || d.Tuples[0].Priority != 1000 {
		t.Errorf("asterisk document %+v", d)
	}
}

// TestPIDFState checks the summary rule on documents built by hand.
func TestPIDFState(t *testing.T) {
	open := pidfTuple{ID: "o", Open: true, Priority: -1}
	closed := pidfTuple{ID: "c", Priority: -1}
	person := func(acts ...rpidActivity) []pidfPerson { return []pidfPerson{{Activities: acts}} }
	tests := []struct {
		name string
		doc  pidfDoc
		want event.PresenceState
	}{
		{"no tuples", pidfDoc{}, event.Offline},
		{"closed", pidfDoc{Tuples: []pidfTuple{closed}}, event.Offline},
		{"open", pidfDoc{Tuples: []pidfTuple{closed, open}}, event.Available},
		{"away", pidfDoc{Tuples: []pidfTuple{open}, Persons: person(activityAway)}, event.Away},
		{"meal is away", pidfDoc{Tuples: []pidfTuple{open}, Persons: person("meal")}, event.Away},
		{"xa beats away", pidfDoc{Tuples: []pidfTuple{open}, Persons: person(activityAway, "holiday")}, event.ExtendedAway},
		{"busy beats xa", pidfDoc{Tuples: []pidfTuple{open}, Persons: person(activityVacation, activityBusy)}, event.DoNotDisturb},
		{"phone beats all", pidfDoc{Tuples: []pidfTuple{open}, Persons: person(activityBusy, activityOnThePhone, activityAway)}, event.OnThePhone},
		{"phone in a closed tuple", pidfDoc{Tuples: []pidfTuple{{ID: "t", Activities: []rpidActivity{activityOnThePhone}}}}, event.OnThePhone},
		{"activity without tuples", pidfDoc{Persons: person(activityMeeting)}, event.DoNotDisturb},
		{"activity with tuples closed", pidfDoc{Tuples: []pidfTuple{closed}, Persons: person(activityAway)}, event.Away},
		{"neutral activities", pidfDoc{Tuples: []pidfTuple{open}, Persons: person(activityUnknown, activityOther, "working")}, event.Available},
		{"neutral activity, closed", pidfDoc{Tuples: []pidfTuple{closed}, Persons: person("tv")}, event.Offline},
		{"across persons", pidfDoc{Tuples: []pidfTuple{open}, Persons: append(person(activityAway), person(activityBusy)...)}, event.DoNotDisturb},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.doc.state(); got != tt.want {
				t.Errorf("state %s, want %s", got, tt.want)
			}
		})
	}
}

func TestPIDFNote(t *testing.T) {
	note := func(s string) []pidfNote { return []pidfNote{{Text: s}} }
	tests := []struct {
		name string
		doc  pidfDoc
		want string
	}{
		{"none", pidfDoc{Tuples: []pidfTuple{{ID: "a", Open: true}}}, ""},
		{"person first", pidfDoc{
			Notes:   note("presence"),
			Tuples:  []pidfTuple{{ID: "a", Open: true, Notes: note("tuple")}},
			Persons: []pidfPerson{{ActivityNotes: note("activity")}, {Notes: note("person")}},
		}, "person"},
		{"then activity notes", pidfDoc{Notes: note("presence"), Persons: []pidfPerson{{ActivityNotes: note("activity")}}}, "activity"},
		{"then presence", pidfDoc{Notes: note("presence"), Tuples: []pidfTuple{{ID: "a", Open: true, Notes: note("tuple")}}}, "presence"},
		{"open tuple before closed", pidfDoc{Tuples: []pidfTuple{
			{ID: "a", Priority: 1000, Notes: note("closed")},
			{ID: "b", Open: true, Priority: 100, Notes: note("open")},
		}}, "open"},
		{"higher priority", pidfDoc{Tuples: []pidfTuple{
			{ID: "a", Open: true, Priority: -1, Notes: note("none")},
			{ID: "b", Open: true, Priority: 500, Notes: note("half")},
			{ID: "c", Open: true, Priority: 500, Notes: note("half too")},
		}}, "half"},
		{"tuple without note skipped", pidfDoc{Tuples: []pidfTuple{
			{ID: "a", Open: true, Priority: 1000},
			{ID: "b", Open: true, Priority: 100, Notes: note("low")},
		}}, "low"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.doc.note(); got != tt.want {
				t.Errorf("note %q, want %q", got, tt.want)
			}
		})
	}
}

// pidfWith returns a document whose tuple holds depth-2 nested extension
// elements (so that the deepest is at depth depth) and tuples tuples in
// all, padded with a comment to size bytes when size is larger.
func pidfWith(depth, tuples, size int) []byte {
	var b strings.Builder
	b.WriteString(`<presence xmlns="urn:ietf:params:xml:ns:pidf" xmlns:x="urn:example:x" entity="sip:a@example.com">`)
	for i := range tuples {
		fmt.Fprintf(&b, `<tuple id="t%d"><status><basic>open</basic></status>`, i)
		if i == 0 {
			b.WriteString(strings.Repeat("<x:n>", depth-2) + strings.Repeat("</x:n>", depth-2))
		}
		b.WriteString("</tuple>")
	}
	b.WriteString("</presence>")
	if pad := size - b.Len() - len("<!---->"); pad >= 0 {
		b.WriteString("<!--" + strings.Repeat("x", pad) + "-->")
	}
	return []byte(b.String())
}

func TestPIDFLimits(t *testing.T) {
	tests := []struct {
		name    string
		body    []byte
		wantErr error
	}{
		{"depth at the limit", pidfWith(maxPIDFDepth, 1, 0), nil},
		{"depth over the limit", pidfWith(maxPIDFDepth+1, 1, 0), errPIDFTooDeep},
		{"tuples at the limit", pidfWith(2, maxPIDFTuples, 0), nil},
		{"tuples over the limit", pidfWith(2, maxPIDFTuples+1, 0), errPIDFTooMany},
		{"size at the limit", pidfWith(2, 1, maxPIDFSize), nil},
		{"size over the limit", pidfWith(2, 1, maxPIDFSize+1), errPIDFTooLarge},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.name == "size at the limit" && len(tt.body) != maxPIDFSize {
				t.Fatalf("body of %d bytes", len(tt.body))
			}
			_, err := parsePIDF(tt.body)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("parsePIDF: %v, want %v", err, tt.wantErr)
			}
		})
	}
}

func TestBuildPIDF(t *testing.T) {
	got := string(buildPIDF("sip:alice@parley.example", event.Away, " back <soon> & \"later\"\n", "sip:alice@parley.example"))
	want := `<?xml version="1.0" encoding="UTF-8"?>
<presence xmlns="urn:ietf:params:xml:ns:pidf" xmlns:dm="urn:ietf:params:xml:ns:pidf:data-model" xmlns:rpid="urn:ietf:params:xml:ns:pidf:rpid" entity="sip:alice@parley.example">
 <tuple id="parley"><status><basic>open</basic></status><contact>sip:alice@parley.example</contact><note>back &lt;soon&gt; &amp; &#34;later&#34;</note></tuple>
 <dm:person id="p"><rpid:activities><rpid:away/></rpid:activities></dm:person>
</presence>
`
	if got != want {
		t.Errorf("buildPIDF:\n%s\nwant:\n%s", got, want)
	}
	got = string(buildPIDF("sip:bob@parley.example", event.Offline, "", ""))
	want = `<?xml version="1.0" encoding="UTF-8"?>
<presence xmlns="urn:ietf:params:xml:ns:pidf" entity="sip:bob@parley.example">
 <tuple id="parley"><status><basic>closed</basic></status></tuple>
</presence>
`
	if got != want {
		t.Errorf("buildPIDF:\n%s\nwant:\n%s", got, want)
	}
}

func TestPIDFRoundTrip(t *testing.T) {
	states := []event.PresenceState{event.Offline, event.Available, event.Away, event.ExtendedAway, event.DoNotDisturb, event.OnThePhone}
	notes := []string{"", "in a meeting until 3", "  padded\t\n", "<&>\"' ]]> &amp;", "line one\nline two\r\nthree\ttabbed", "日本語 ☺ 🙂", "\u00a0nbsp kept\u00a0"}
	contacts := []string{"", "sip:alice@parley.example", "sip:a@b;x=\"<&>\""}
	entities := []string{"sip:alice@parley.example", "sips:alice@parley.example", "pres:alice@parley.example", "sip:a&b@x"}
	for _, st := range states {
		for _, note := range notes {
			for _, contact := range contacts {
				for _, entity := range entities {
					doc := buildPIDF(entity, st, note, contact)
					d, err := parsePIDF(doc)
					if err != nil {
						t.Fatalf("parsePIDF(buildPIDF(%q, %s, %q, %q)): %v\n%s", entity, st, note, contact, err, doc)
					}
					wantNote := strings.Trim(note, " \t\r\n")
					if d.state() != st || d.note() != wantNote || d.Entity != entity || len(d.Tuples) != 1 || d.Tuples[0].Contact != contact {
						t.Errorf("round trip of %s, %q, %q, %q: state %s, note %q, entity %q, tuples %+v\n%s",
							st, note, contact, entity, d.state(), d.note(), d.Entity, d.Tuples, doc)
					}
				}
			}
		}
	}
	// A state outside the closed set is written as offline.
	d, err := parsePIDF(buildPIDF("sip:a@b", event.PresenceState(200), "", ""))
	if err != nil || d.state() != event.Offline {
		t.Errorf("unknown state: %v, %v", d.state(), err)
	}
}

// FuzzPIDF checks that the parser never panics, that what it accepts is
// within its limits and rules, and that the summary of any document it
// accepts survives buildPIDF and parsePIDF.
func FuzzPIDF(f *testing.F) {
	for _, s := range pidfSamples {
		b := readPIDFSample(f, s.file)
		if len(b) <= maxPIDFSize {
			f.Add(b)
		}
	}
	f.Add(buildPIDF("sip:a@b", event.DoNotDisturb, "x", "sip:a@c"))
	f.Add([]byte(`<presence xmlns="urn:ietf:params:xml:ns:pidf" entity="sip:a@b"><tuple id="t"><status><basic>open</basic></status></tuple></presence>`))
	f.Fuzz(func(t *testing.T, body []byte) {
		d, err := parsePIDF(body)
		if err != nil {
			if !strings.HasPrefix(err.Error(), "pidf: ") {
				t.Fatalf("error %q", err)
			}
			return
		}
		if !validPIDFEntity(d.Entity) {
			t.Fatalf("entity %q accepted", d.Entity)
		}
		if len(d.Tuples) > maxPIDFTuples {
			t.Fatalf("%d tuples accepted", len(d.Tuples))
		}
		ids := make(map[string]bool)
		for _, tp := range d.Tuples {
			if tp.ID == "" || ids[tp.ID] {
				t.Fatalf("tuple id %q accepted", tp.ID)
			}
			ids[tp.ID] = true
		}
		st, note, contact := d.state(), d.note(), ""
		if len(d.Tuples) > 0 {
			contact = d.Tuples[0].Contact
		}
		out := buildPIDF(d.Entity, st, note, contact)
		d2, err := parsePIDF(out)
		if err != nil {
			t.Fatalf("parsePIDF(buildPIDF(...)): %v\n%s", err, out)
		}
		if d2.state() != st || d2.note() != note || d2.Entity != d.Entity {
			t.Fatalf("round trip: state %s → %s, note %q → %q, entity %q → %q\n%s", st, d2.state(), note, d2.note(), d.Entity, d2.Entity, out)
		}
	})
}
