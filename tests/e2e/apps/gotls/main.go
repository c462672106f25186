// Uninstrumented Go HTTPS server and client for the e2e tests: stdlib net/http over
// crypto/tls only (no third-party modules), built offline by harness/gotls.py.
//
//	gotls server -port N -cert FILE -key FILE
//	    HTTP/1.1 and HTTP/2 on one TLS listener (ALPN h2, http/1.1: net/http does h2 by
//	    itself over TLS). Routes: /hello 200, /boom 500, anything else 404.
//	    Prints "READY <port>" once listening.
//	gotls server -port N -plain
//	    The same in cleartext, HTTP/1.1 only (the tests' control).
//	gotls client -url https://127.0.0.1:N -ca FILE -http 1.1|2 -n N PATH...
//	    N requests in turn (cycling over the PATHs) on one kept-alive connection; one JSON
//	    line per request {path, status, proto, local_port, reused}, then a summary line
//	    {"done": N, "codes": {"200": n, ...}, "protos": {...}, "connections": n}.
//
// Any unexpected error exits 1.
package main

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"os"
	"strconv"
	"time"
)

const UserAgent = "e2e-gotls/1.0"

func emit(v map[string]any) {
	b, _ := json.Marshal(v)
	fmt.Println(string(b))
}

func die(err error) {
	fmt.Fprintln(os.Stderr, "error:", err)
	os.Exit(1)
}

func serve(args []string) {
	fs := flag.NewFlagSet("server", flag.ExitOnError)
	port := fs.Int("port", 0, "port on 127.0.0.1")
	cert := fs.String("cert", "", "server certificate (PEM)")
	key := fs.String("key", "", "server key (PEM)")
	plain := fs.Bool("plain", false, "cleartext HTTP/1.1, no TLS")
	fs.Parse(args)

	mux := http.NewServeMux()
	mux.HandleFunc("/hello", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		io.WriteString(w, "hello over "+r.Proto+"\n")
	})
	mux.HandleFunc("/boom", func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "boom", http.StatusInternalServerError)
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		http.NotFound(w, r)
	})
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second,
		TLSConfig: &tls.Config{MinVersion: tls.VersionTLS12}}
	ln, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(*port))
	if err != nil {
		die(err)
	}
	fmt.Printf("READY %d\n", *port)
	os.Stdout.Sync()
	if *plain {
		die(srv.Serve(ln))
	}
	die(srv.ServeTLS(ln, *cert, *key))
}

func client(args []string) {
	fs := flag.NewFlagSet("client", flag.ExitOnError)
	base := fs.String("url", "", "https://127.0.0.1:N")
	ca := fs.String("ca", "", "CA certificate to trust (PEM); none for an http:// -url")
	proto := fs.String("http", "2", "1.1 or 2")
	n := fs.Int("n", 1, "requests")
	wait := fs.Duration("wait", 0, "sleep this long before the first request")
	fs.Parse(args)
	time.Sleep(*wait)
	paths := fs.Args()
	if len(paths) == 0 {
		paths = []string{"/hello"}
	}

	pool := x509.NewCertPool()
	if *ca != "" {
		pem, err := os.ReadFile(*ca)
		if err != nil {
			die(err)
		}
		if !pool.AppendCertsFromPEM(pem) {
			die(fmt.Errorf("no certificate in %s", *ca))
		}
	}
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}, MaxIdleConnsPerHost: 1,
		DisableCompression: true}
	switch *proto {
	case "2":
		tr.ForceAttemptHTTP2 = true
	case "1.1":
		// A non-nil, empty TLSNextProto turns HTTP/2 off; ALPN then offers http/1.1 only.
		tr.TLSNextProto = map[string]func(string, *tls.Conn) http.RoundTripper{}
		tr.TLSClientConfig.NextProtos = []string{"http/1.1"}
	default:
		die(fmt.Errorf("-http %q: want 1.1 or 2", *proto))
	}
	c := &http.Client{Transport: tr, Timeout: 20 * time.Second}

	codes, protos, conns := map[string]int{}, map[string]int{}, map[string]bool{}
	for i := 0; i < *n; i++ {
		path := paths[i%len(paths)]
		var local string
		var reused bool
		trace := &httptrace.ClientTrace{GotConn: func(info httptrace.GotConnInfo) {
			local, reused = info.Conn.LocalAddr().String(), info.Reused
		}}
		req, err := http.NewRequest("GET", *base+path, nil)
		if err != nil {
			die(err)
		}
		req = req.WithContext(httptrace.WithClientTrace(req.Context(), trace))
		req.Header.Set("User-Agent", UserAgent)
		resp, err := c.Do(req)
		if err != nil {
			die(err)
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			die(err)
		}
		_, portStr, _ := net.SplitHostPort(local)
		lport, _ := strconv.Atoi(portStr)
		conns[local] = true
		codes[strconv.Itoa(resp.StatusCode)]++
		protos[resp.Proto]++
		emit(map[string]any{"path": path, "status": resp.StatusCode, "proto": resp.Proto,
			"local_port": lport, "reused": reused, "body_size": len(body)})
	}
	emit(map[string]any{"done": *n, "codes": codes, "protos": protos, "connections": len(conns)})
}

func main() {
	if len(os.Args) < 2 {
		die(fmt.Errorf("usage: gotls server|client ..."))
	}
	switch os.Args[1] {
	case "server":
		serve(os.Args[2:])
	case "client":
		client(os.Args[2:])
	default:
		die(fmt.Errorf("unknown mode %q", os.Args[1]))
	}
}
