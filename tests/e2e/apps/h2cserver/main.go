// Uninstrumented HTTP server for the e2e tests and the h2c fixtures: Go's net/http with
// golang.org/x/net/http2/h2c (the Debian-packaged version), built offline by
// harness/goclient.py.
//
//	h2cserver ADDR          accepts `Upgrade: h2c` (RFC 7540 section 3.2) and prior knowledge
//	h2cserver -http1 ADDR   plain net/http: ignores `Upgrade: h2c`, answers in HTTP/1.1
//
// Routes: /missing -> 404 "missing\n"; /ws -> 101 Upgrade: websocket, then echoes the raw
// bytes it reads (a stand-in for a WebSocket peer); POST anything -> 201 "got N bytes\n";
// any other path -> 200 with "hello from PATH\n" repeated (the query's n=N times, default 1).
// Prints "READY" once listening.
package main

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/h2c"
)

func handle(w http.ResponseWriter, r *http.Request) {
	switch {
	case r.URL.Path == "/missing":
		http.Error(w, "missing", http.StatusNotFound)
	case r.URL.Path == "/ws":
		websocketEcho(w, r)
	case r.Method == http.MethodPost:
		n, _ := io.Copy(io.Discard, r.Body)
		w.WriteHeader(http.StatusCreated)
		fmt.Fprintf(w, "got %d bytes\n", n)
	default:
		n, err := strconv.Atoi(r.URL.Query().Get("n"))
		if err != nil || n < 1 {
			n = 1
		}
		w.Header().Set("Content-Type", "text/plain")
		io.WriteString(w, strings.Repeat("hello from "+r.URL.Path+"\n", n))
	}
}

// websocketEcho switches to "websocket" without speaking it: the bytes after the 101 are only
// echoed, which is all a tracer may see of them anyway.
func websocketEcho(w http.ResponseWriter, r *http.Request) {
	conn, rw, err := w.(http.Hijacker).Hijack()
	if err != nil {
		return
	}
	defer conn.Close()
	rw.WriteString("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n" +
		"Connection: Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n")
	rw.Flush()
	buf := make([]byte, 4096)
	for {
		n, err := rw.Read(buf)
		if n > 0 {
			conn.Write(buf[:n])
		}
		if err != nil {
			return
		}
	}
}

func main() {
	args := os.Args[1:]
	plain := len(args) > 0 && args[0] == "-http1"
	if plain {
		args = args[1:]
	}
	if len(args) != 1 {
		fmt.Fprintln(os.Stderr, "usage: h2cserver [-http1] ADDR")
		os.Exit(2)
	}
	var handler http.Handler = http.HandlerFunc(handle)
	if !plain {
		handler = h2c.NewHandler(handler, &http2.Server{})
	}
	ln, err := net.Listen("tcp", args[0])
	if err != nil {
		fmt.Fprintln(os.Stderr, "error:", err)
		os.Exit(1)
	}
	fmt.Println("READY")
	if err := http.Serve(ln, handler); err != nil {
		fmt.Fprintln(os.Stderr, "error:", err)
		os.Exit(1)
	}
}
