package peertest

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"time"
)

// Homeserver is a running Matrix homeserver started by StartSynapse or
// StartDendrite, serving the client-server API over plain HTTP on 127.0.0.1.
type Homeserver struct {
	Kind       string // "synapse" or "dendrite"
	URL        string // base URL, "http://127.0.0.1:PORT" (no trailing slash)
	ServerName string // "localhost"; user IDs are @user:localhost
	Dir        string // config, keys, databases and the server log
	// SharedSecret is the configured registration_shared_secret (admin
	// registration: Synapse's /_synapse/admin/v1/register, Dendrite's
	// create-account).
	SharedSecret string

	proc *process
	// argv, logPath and startWait start the server again (Start).
	argv      []string
	logPath   string
	startWait time.Duration
}

// HomeserverOptions configure StartSynapse and StartDendrite.
type HomeserverOptions struct {
	// Registration is the path of an appservice registration YAML file to
	// load (app_service_config_files / app_service_api.config_files); "" for
	// none. The file must exist and be valid when the server starts.
	Registration string
	// Presence turns Dendrite's presence on (global.presence.enable_outbound
	// and enable_inbound; both are off by default, and then Dendrite drops
	// every presence update). Synapse always runs with presence enabled.
	Presence bool
}

// SynapsePython is the interpreter StartSynapse uses: the venv that
// scripts/install-peers.sh creates under Dir().
func SynapsePython() string { return filepath.Join(Dir(), "venv", "bin", "python") }

// DendriteBin returns the path of a Dendrite command (dendrite, generate-keys,
// create-account) that scripts/install-peers.sh builds under Dir().
func DendriteBin(name string) string { return filepath.Join(Dir(), "bin", name) }

// StartSynapse starts Synapse from the peers venv (SynapsePython) in
// t.TempDir(), with a config written from scratch: server_name "localhost",
// one HTTP listener on 127.0.0.1:<free port> serving the client (and media)
// API, SQLite, open registration without verification, a random
// registration_shared_secret, opts.Registration as appservice, rate limits
// raised far above anything a test does, presence enabled, no federation key
// servers. It waits until GET /_matrix/client/versions answers 200 and stops
// the server with t.Cleanup. The log is Dir/homeserver.log.
func StartSynapse(t TB, opts HomeserverOptions) *Homeserver {
	t.Helper()
	python, err := lookBinary(SynapsePython())
	Require(t, "synapse", err)

	dir := t.TempDir()
	port := FreePort(t)
	h := &Homeserver{
		Kind:         "synapse",
		URL:          "http://127.0.0.1:" + strconv.Itoa(port),
		ServerName:   "localhost",
		Dir:          dir,
		SharedSecret: randomSecret(16),
	}

	// Signing key in signedjson's format: "ed25519 <version> <unpadded base64 seed>".
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatalf("peertest: synapse: signing key: %v", err)
	}
	keyPath := filepath.Join(dir, "signing.key")
	keyLine := "ed25519 a_" + randomSecret(2) + " " + base64.RawStdEncoding.EncodeToString(priv.Seed()) + "\n"
	if err := os.WriteFile(keyPath, []byte(keyLine), 0o600); err != nil {
		t.Fatalf("peertest: synapse: %v", err)
	}

	lots := map[string]any{"per_second": 10000, "burst_count": 100000}
	cfg := map[string]any{
		"server_name":      h.ServerName,
		"public_baseurl":   h.URL + "/",
		"pid_file":         filepath.Join(dir, "homeserver.pid"),
		"signing_key_path": keyPath,
		"media_store_path": filepath.Join(dir, "media_store"),
		"report_stats":     false,
		"listeners": []any{map[string]any{
			"port":           port,
			"bind_addresses": []string{"127.0.0.1"},
			"type":           "http",
			"tls":            false,
			"x_forwarded":    false,
			"resources":      []any{map[string]any{"names": []string{"client", "media"}, "compress": false}},
		}},
		"database": map[string]any{
			"name": "sqlite3",
			"args": map[string]any{"database": filepath.Join(dir, "homeserver.db")},
		},
		"macaroon_secret_key":                      randomSecret(32),
		"form_secret":                              randomSecret(32),
		"registration_shared_secret":               h.SharedSecret,
		"enable_registration":                      true,
		"bcrypt_rounds":                            4,
		"enable_registration_without_verification": true,
		"trusted_key_servers":                      []any{},
		"suppress_key_server_warning":              true,
		"presence":                                 map[string]any{"enabled": true},
		"url_preview_enabled":                      false,
		"enable_metrics":                           false,
		"rc_message":                               lots,
		"rc_registration":                          lots,
		"rc_registration_token_validity":           lots,
		"rc_login":                                 map[string]any{"address": lots, "account": lots, "failed_attempts": lots},
		"rc_admin_redaction":                       lots,
		"rc_joins":                                 map[string]any{"local": lots, "remote": lots},
		"rc_joins_per_room":                        lots,
		"rc_invites":                               map[string]any{"per_room": lots, "per_user": lots, "per_issuer": lots},
		"rc_3pid_validation":                       lots,
		"rc_presence":                              map[string]any{"per_user": lots},
		"rc_media_create":                          lots,
		"rc_room_creation":                         lots,
		"rc_delayed_event_mgmt":                    lots,
		"rc_reports":                               lots,
		"rc_third_party_invite":                    lots,
		"rc_user_directory":                        lots,
		"rc_profile":                               lots,
		"rc_key_requests":                          lots,
	}
	if opts.Registration != "" {
		abs, err := filepath.Abs(opts.Registration)
		if err != nil {
			t.Fatalf("peertest: synapse: %v", err)
		}
		cfg["app_service_config_files"] = []string{abs}
	}
	cfgPath := filepath.Join(dir, "homeserver.yaml")
	writeJSONConfig(t, cfgPath, cfg) // JSON is valid YAML

	h.argv = []string{python, "-m", "synapse.app.homeserver", "--config-path", cfgPath}
	h.logPath, h.startWait = filepath.Join(dir, "homeserver.log"), 90*time.Second
	t.Cleanup(func() { h.Stop(t) })
	h.Start(t)
	return h
}

// StartDendrite starts Dendrite from the peers cache (DendriteBin) in
// t.TempDir(): a fresh matrix_key.pem from generate-keys, server_name
// "localhost", one SQLite database per component, federation disabled, an
// in-memory JetStream, client rate limiting off, a random
// registration_shared_secret, opts.Registration as appservice, and
// --really-enable-open-registration, listening over HTTP on 127.0.0.1:<free
// port>. It waits until GET /_matrix/client/versions answers 200 and stops
// the server with t.Cleanup. The log is Dir/dendrite.log.
//
// Unlike Synapse, Dendrite does not push typing, receipts or presence to
// appservices (no MSC2409); tests that need those must /sync, or poll
// presence with GET /presence/{userId}/status (opts.Presence).
func StartDendrite(t TB, opts HomeserverOptions) *Homeserver {
	t.Helper()
	bin, err := lookBinary(DendriteBin("dendrite"))
	if err == nil {
		_, err = lookBinary(DendriteBin("generate-keys"))
	}
	Require(t, "dendrite", err)

	dir := t.TempDir()
	port := FreePort(t)
	h := &Homeserver{
		Kind:         "dendrite",
		URL:          "http://127.0.0.1:" + strconv.Itoa(port),
		ServerName:   "localhost",
		Dir:          dir,
		SharedSecret: randomSecret(16),
	}
	keyPath := filepath.Join(dir, "matrix_key.pem")
	gen := exec.Command(DendriteBin("generate-keys"), "--private-key", keyPath)
	gen.Dir = dir
	runCmd(t, "dendrite generate-keys", gen)

	db := func(name string) map[string]any {
		return map[string]any{"connection_string": "file:" + filepath.Join(dir, name+".db")}
	}
	appservices := []string{}
	if opts.Registration != "" {
		abs, err := filepath.Abs(opts.Registration)
		if err != nil {
			t.Fatalf("peertest: dendrite: %v", err)
		}
		appservices = append(appservices, abs)
	}
	cfg := map[string]any{
		"version": 2,
		"global": map[string]any{
			"server_name":                    h.ServerName,
			"private_key":                    keyPath,
			"disable_federation":             true,
			"trusted_third_party_id_servers": []string{},
			"jetstream": map[string]any{
				"in_memory":    true,
				"storage_path": filepath.Join(dir, "jetstream"),
				"topic_prefix": "Dendrite",
			},
			"report_stats": map[string]any{"enabled": false},
			"metrics":      map[string]any{"enabled": false},
			"presence":     map[string]any{"enable_inbound": opts.Presence, "enable_outbound": opts.Presence},
		},
		"app_service_api": map[string]any{"config_files": appservices},
		"client_api": map[string]any{
			"registration_disabled":      false,
			"guests_disabled":            true,
			"registration_shared_secret": h.SharedSecret,
			"rate_limiting":              map[string]any{"enabled": false, "threshold": 20, "cooloff_ms": 500},
		},
		"federation_api": map[string]any{"database": db("federationapi"), "key_perspectives": []any{}},
		"key_server":     map[string]any{"database": db("keyserver")},
		"media_api":      map[string]any{"database": db("mediaapi"), "base_path": filepath.Join(dir, "media_store")},
		"mscs":           map[string]any{"database": db("mscs")},
		"relay_api":      map[string]any{"database": db("relayapi")},
		"room_server":    map[string]any{"database": db("roomserver")},
		"sync_api":       map[string]any{"database": db("syncapi"), "search": map[string]any{"enabled": false}},
		"user_api":       map[string]any{"account_database": db("userapi_accounts"), "bcrypt_cost": 4},
		"logging":        []any{map[string]any{"type": "std", "level": "info"}},
	}
	cfgPath := filepath.Join(dir, "dendrite.yaml")
	writeJSONConfig(t, cfgPath, cfg)

	h.argv = []string{bin, "--config", cfgPath, "--http-bind-address", "127.0.0.1:" + strconv.Itoa(port),
		"--really-enable-open-registration"}
	h.logPath, h.startWait = filepath.Join(dir, "dendrite.log"), 30*time.Second
	t.Cleanup(func() { h.Stop(t) })
	h.Start(t)
	return h
}

// Start starts the homeserver again after Stop, with the same configuration,
// data and port, and waits until it answers. StartSynapse and StartDendrite
// call it; calling it while the server runs fails the test.
func (h *Homeserver) Start(t TB) {
	t.Helper()
	if h.proc != nil && !h.proc.exited() {
		t.Fatalf("peertest: %s already running", h.Kind)
	}
	h.proc = startProcess(t, h.Kind, h.Dir, h.logPath, syscall.SIGTERM, nil, nil, h.argv...)
	h.proc.waitReady(t, startTimeout(h.startWait), h.versionsOK)
}

// Stop stops the homeserver (SIGTERM to its process group) and waits for it
// to exit. Start brings it back. Stopping a stopped server does nothing.
func (h *Homeserver) Stop(t TB) {
	t.Helper()
	if h.proc != nil {
		h.proc.stop()
	}
}

func writeJSONConfig(t TB, path string, cfg any) {
	t.Helper()
	b, err := json.MarshalIndent(cfg, "", "  ")
	if err != nil {
		t.Fatalf("peertest: config %s: %v", path, err)
	}
	if err := os.WriteFile(path, append(b, '\n'), 0o600); err != nil {
		t.Fatalf("peertest: config %s: %v", path, err)
	}
}

var httpClient = &http.Client{Timeout: 30 * time.Second}

func (h *Homeserver) versionsOK() error {
	c := http.Client{Timeout: 2 * time.Second}
	resp, err := c.Get(h.URL + "/_matrix/client/versions")
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET /_matrix/client/versions: %s", resp.Status)
	}
	return nil
}

// Register creates the user @user:ServerName through the client-server API
// (POST /_matrix/client/v3/register, kind=user, going through the
// user-interactive auth with m.login.dummy) and returns its user ID and an
// access token. password must be at least 8 characters (Dendrite's minimum).
// Any failure fails the test.
func (h *Homeserver) Register(t TB, user, password string) (userID, accessToken string) {
	t.Helper()
	url := h.URL + "/_matrix/client/v3/register?kind=user"
	body := map[string]any{
		"username":                    user,
		"password":                    password,
		"initial_device_display_name": "peertest",
	}
	var session string
	for attempt := 0; attempt < 3; attempt++ {
		if session != "" {
			body["auth"] = map[string]any{"type": "m.login.dummy", "session": session}
		}
		status, raw := h.postJSON(t, url, body)
		switch status {
		case http.StatusOK:
			var ok struct {
				UserID      string `json:"user_id"`
				AccessToken string `json:"access_token"`
			}
			if err := json.Unmarshal(raw, &ok); err != nil || ok.UserID == "" || ok.AccessToken == "" {
				t.Fatalf("peertest: %s register %s: bad response %s (%v)", h.Kind, user, raw, err)
			}
			return ok.UserID, ok.AccessToken
		case http.StatusUnauthorized:
			var uia struct {
				Session string `json:"session"`
				Flows   []struct {
					Stages []string `json:"stages"`
				} `json:"flows"`
			}
			if err := json.Unmarshal(raw, &uia); err != nil || uia.Session == "" || session != "" {
				t.Fatalf("peertest: %s register %s: 401 %s", h.Kind, user, raw)
			}
			dummy := false
			for _, f := range uia.Flows {
				if len(f.Stages) == 1 && f.Stages[0] == "m.login.dummy" {
					dummy = true
				}
			}
			if !dummy {
				t.Fatalf("peertest: %s register %s: no m.login.dummy flow: %s", h.Kind, user, raw)
			}
			session = uia.Session
		default:
			t.Fatalf("peertest: %s register %s: HTTP %d: %s", h.Kind, user, status, raw)
		}
	}
	t.Fatalf("peertest: %s register %s: user-interactive auth did not complete", h.Kind, user)
	return "", ""
}

func (h *Homeserver) postJSON(t TB, url string, body any) (int, []byte) {
	t.Helper()
	b, err := json.Marshal(body)
	if err != nil {
		t.Fatalf("peertest: %v", err)
	}
	resp, err := httpClient.Post(url, "application/json", bytes.NewReader(b))
	if err != nil {
		t.Fatalf("peertest: %s POST %s: %v", h.Kind, url, err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("peertest: %s POST %s: %v", h.Kind, url, err)
	}
	return resp.StatusCode, raw
}
