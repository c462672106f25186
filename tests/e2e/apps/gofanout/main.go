// Uninstrumented Go fan-out service for the concurrent trace-context test
// (test_concurrent_context.py): stdlib net/http only, built offline by harness/gobuild.py.
//
//	gofanout -port N -down M [-delay-ms D] [-spawn]
//
// GET /req/<rid>: waits D ms (so concurrent requests overlap), then GETs
// http://127.0.0.1:M/down/<rid> with http.DefaultClient (the default Transport: keep-alive,
// at most 2 idle connections per host, its own readLoop/writeLoop goroutines per connection),
// then answers 200 with JSON {rid, down_status, inflight}: inflight is how many /req requests
// were being handled when this one called downstream. With -spawn the downstream call is made
// from a goroutine the handler starts (go func(){...}()) and waits for. Anything else: 404.
// Prints "READY <port>" once listening.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
)

func main() {
	port := flag.Int("port", 0, "port on 127.0.0.1")
	down := flag.Int("down", 0, "downstream port on 127.0.0.1")
	delay := flag.Int("delay-ms", 30, "wait before calling downstream")
	spawn := flag.Bool("spawn", false, "call downstream from a goroutine the handler starts")
	flag.Parse()

	var inflight int64
	mux := http.NewServeMux()
	mux.HandleFunc("/req/", func(w http.ResponseWriter, r *http.Request) {
		n := atomic.AddInt64(&inflight, 1)
		defer atomic.AddInt64(&inflight, -1)
		rid := strings.TrimPrefix(r.URL.Path, "/req/")
		time.Sleep(time.Duration(*delay) * time.Millisecond)
		now := atomic.LoadInt64(&inflight)
		if now > n {
			n = now
		}
		url := fmt.Sprintf("http://127.0.0.1:%d/down/%s", *down, rid)
		var resp *http.Response
		var err error
		if *spawn {
			done := make(chan struct{})
			go func() {
				defer close(done)
				resp, err = http.Get(url)
			}()
			<-done
		} else {
			resp, err = http.Get(url)
		}
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(map[string]any{"rid": rid, "down_status": resp.StatusCode,
			"inflight": n})
	})
	mux.HandleFunc("/", http.NotFound)
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	ln, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(*port))
	if err != nil {
		fmt.Fprintln(os.Stderr, "error:", err)
		os.Exit(1)
	}
	fmt.Printf("READY %d\n", *port)
	os.Stdout.Sync()
	fmt.Fprintln(os.Stderr, "error:", srv.Serve(ln))
	os.Exit(1)
}
