module github.com/parleygw/parley

go 1.26.0

require (
	github.com/jackc/pgx/v5 v5.12.0
	github.com/prometheus/client_golang v1.23.2
	gopkg.in/yaml.v3 v3.0.1
	maunium.net/go/mautrix v0.31.0
	mellium.im/xmpp v0.23.0
	modernc.org/sqlite v1.61.1
)
