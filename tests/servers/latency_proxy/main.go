// latency-proxy: an HTTP/1.1 reverse proxy on loopback that adds a fixed time-to-first-byte
// delay to every request, for benchmarks that model an object store's per-request latency
// (kernel netem is not available everywhere the tests run).
//
// Each client connection gets its own upstream connection, kept for as long as the client
// keeps its connection open (keep-alive to the upstream, and the upstream sees exactly the
// client's connections: a per-connection rate limit behind it still applies per client
// connection). On that pair:
//
//   - client -> upstream: every request head is read, held for -delay, then forwarded byte for
//     byte (Host and every other header untouched, so S3 v4 signatures and presigned URLs stay
//     valid), followed by its body (Content-Length or chunked, copied as is);
//   - upstream -> client: one io.Copy for the life of the connection, which on Linux is
//     splice(2) between the two sockets: response bytes never enter this process.
//
// A request's first response byte therefore leaves no earlier than -delay after its head
// arrived. Requests on one connection are delayed one after the other (HTTP/1.1 without
// pipelining sends the next only after the previous response). Standard library only.
//
//	latency-proxy -listen 127.0.0.1:PORT -upstream 127.0.0.1:PORT -delay 30ms [-stats 127.0.0.1:PORT]
//
// GET http://<stats>/stats answers JSON counters (connections, requests, delayed requests,
// request-head bytes, response bytes of closed connections).
package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"
)

var (
	listenAddr   = flag.String("listen", "127.0.0.1:0", "address to listen on (loopback only)")
	upstreamAddr = flag.String("upstream", "", "host:port of the origin")
	statsAddr    = flag.String("stats", "", "address of the stats endpoint (loopback only; empty = none)")
	delay        = flag.Duration("delay", 30*time.Millisecond, "time-to-first-byte added to every request")
	maxConns     = flag.Int("max-conns", 1024, "client connections served at once (more wait in accept)")
	idle         = flag.Duration("idle-timeout", 120*time.Second, "close a client connection idle this long")
	maxHead      = flag.Int("max-header-bytes", 1<<20, "largest request head accepted")
	procs        = flag.Int("procs", 1, "GOMAXPROCS: the bytes move in the kernel (splice), one P "+
		"schedules them with less CPU than several spinning to hand goroutines to each other")
)

var stats struct {
	Connections, Open, Requests, HeadBytes, ResponseBytes, Errors atomic.Int64
}

func snapshot() map[string]any {
	return map[string]any{
		"connections":    stats.Connections.Load(),
		"open":           stats.Open.Load(),
		"requests":       stats.Requests.Load(),
		"head_bytes":     stats.HeadBytes.Load(),
		"response_bytes": stats.ResponseBytes.Load(),
		"errors":         stats.Errors.Load(),
		"delay_ms":       float64(*delay) / float64(time.Millisecond),
	}
}

func loopbackOnly(addr string) error {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return err
	}
	if ip := net.ParseIP(host); ip == nil || !ip.IsLoopback() {
		return fmt.Errorf("%s: only a loopback IP address may be listened on", addr)
	}
	return nil
}

// readHead returns the raw request head: request line, headers and the empty line that ends
// them (empty lines before a request line are skipped, RFC 9112 2.2). io.EOF if the client
// closed the connection between requests.
func readHead(br *bufio.Reader) ([]byte, error) {
	var head []byte
	for {
		line, err := br.ReadSlice('\n')
		head = append(head, line...)
		switch {
		case err == bufio.ErrBufferFull:
		case err != nil && len(head) == 0:
			return nil, err
		case err != nil:
			return nil, io.ErrUnexpectedEOF
		case len(bytes.TrimRight(line, "\r\n")) > 0:
		case len(head) == len(line):
			head = head[:0] // an empty line before the request line
		default:
			return head, nil
		}
		if len(head) > *maxHead {
			return nil, errors.New("request head too large")
		}
	}
}

// forwardBody copies the request body that follows head from br to up, as is.
func forwardBody(req *http.Request, br *bufio.Reader, up io.Writer) error {
	te := req.TransferEncoding
	if len(te) > 0 && strings.EqualFold(te[len(te)-1], "chunked") {
		return copyChunked(br, up)
	}
	if req.ContentLength > 0 {
		_, err := io.CopyN(up, br, req.ContentLength)
		return err
	}
	return nil
}

// copyChunked copies a chunked body (chunk framing, extensions and trailers) verbatim.
func copyChunked(br *bufio.Reader, up io.Writer) error {
	for {
		line, err := br.ReadSlice('\n')
		if err != nil {
			return err
		}
		if _, err := up.Write(line); err != nil {
			return err
		}
		sizeText := strings.TrimSpace(string(line))
		if i := strings.IndexByte(sizeText, ';'); i >= 0 {
			sizeText = strings.TrimSpace(sizeText[:i])
		}
		size, err := strconv.ParseInt(sizeText, 16, 64)
		if err != nil || size < 0 {
			return fmt.Errorf("bad chunk size %q", sizeText)
		}
		if size == 0 {
			for { // trailers, up to and including the empty line
				t, err := br.ReadSlice('\n')
				if err != nil {
					return err
				}
				if _, err := up.Write(t); err != nil {
					return err
				}
				if len(t) <= 2 {
					return nil
				}
			}
		}
		if _, err := io.CopyN(up, br, size+2); err != nil { // data + CRLF
			return err
		}
	}
}

func serve(client *net.TCPConn) {
	defer client.Close()
	stats.Connections.Add(1)
	stats.Open.Add(1)
	defer stats.Open.Add(-1)
	upConn, err := net.DialTimeout("tcp", *upstreamAddr, 10*time.Second)
	if err != nil {
		stats.Errors.Add(1)
		log.Printf("dial %s: %v", *upstreamAddr, err)
		return
	}
	up := upConn.(*net.TCPConn)
	defer up.Close()
	_ = client.SetNoDelay(true)
	_ = up.SetNoDelay(true)

	// Responses: upstream -> client for the life of the connection (splice on Linux).
	done := make(chan struct{})
	go func() {
		defer close(done)
		n, err := io.Copy(client, up)
		stats.ResponseBytes.Add(n)
		if err != nil && !errors.Is(err, net.ErrClosed) {
			stats.Errors.Add(1)
		}
		// The upstream ended the connection (or failed): so does the client's, which also
		// ends a request loop waiting for the next request head.
		_ = client.Close()
	}()

	br := bufio.NewReaderSize(client, 64<<10)
	for {
		_ = client.SetReadDeadline(time.Now().Add(*idle))
		head, err := readHead(br)
		if err != nil {
			break
		}
		stats.Requests.Add(1)
		stats.HeadBytes.Add(int64(len(head)))
		req, err := http.ReadRequest(bufio.NewReader(bytes.NewReader(head)))
		if err != nil {
			stats.Errors.Add(1)
			break
		}
		_ = client.SetReadDeadline(time.Time{})
		timer := time.NewTimer(*delay)
		select {
		case <-timer.C:
		case <-done: // upstream gone while we waited
			timer.Stop()
			return
		}
		if _, err := up.Write(head); err != nil {
			break
		}
		if err := forwardBody(req, br, up); err != nil {
			stats.Errors.Add(1)
			break
		}
	}
	// The client sent all it will send: half-close towards the upstream and let the last
	// response finish.
	_ = up.CloseWrite()
	<-done
}

func main() {
	flag.Parse()
	runtime.GOMAXPROCS(*procs)
	log.SetFlags(log.LstdFlags | log.Lmicroseconds)
	if *upstreamAddr == "" {
		log.Fatal("-upstream is required")
	}
	if err := loopbackOnly(*listenAddr); err != nil {
		log.Fatal(err)
	}
	ln, err := net.Listen("tcp", *listenAddr)
	if err != nil {
		log.Fatal(err)
	}
	if *statsAddr != "" {
		if err := loopbackOnly(*statsAddr); err != nil {
			log.Fatal(err)
		}
		sl, err := net.Listen("tcp", *statsAddr)
		if err != nil {
			log.Fatal(err)
		}
		mux := http.NewServeMux()
		mux.HandleFunc("/stats", func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			_ = json.NewEncoder(w).Encode(snapshot())
		})
		go func() { log.Fatal(http.Serve(sl, mux)) }()
	}
	log.Printf("listening on %s -> %s, delay %s", ln.Addr(), *upstreamAddr, *delay)

	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	go func() {
		s := <-sigs
		b, _ := json.Marshal(snapshot())
		log.Printf("%s: exiting; %s", s, b)
		os.Exit(0)
	}()

	slots := make(chan struct{}, *maxConns)
	for {
		slots <- struct{}{}
		c, err := ln.Accept()
		if err != nil {
			<-slots
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			log.Fatal(err)
		}
		go func() {
			defer func() { <-slots }()
			serve(c.(*net.TCPConn))
		}()
	}
}
