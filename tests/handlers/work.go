// work.go: what a Go handler does (the runtime of aws-lambda-go), run
// under the seccomp filter by the sandbox tests (docs/SECURITY.md,
// "Handlers: system calls"): goroutines on several threads, an HTTP
// server and client on 127.0.0.1, files in /tmp, a child process, signals,
// timers, crypto/rand. Prints one JSON object; exits 0 when every check
// passed. Build: go build -o work work.go
package main

import (
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"sync"
	"syscall"
	"time"
)

func main() {
	runtime.GOMAXPROCS(4)
	results := map[string]string{}
	check := func(name string, fn func() error) {
		if err := fn(); err != nil {
			results[name] = err.Error()
		} else {
			results[name] = "ok"
		}
	}
	check("goroutines", func() error {
		var wg sync.WaitGroup
		var mu sync.Mutex
		n := 0
		for i := 0; i < 64; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				b := make([]byte, 1<<20)
				for j := range b {
					b[j] = byte(j)
				}
				mu.Lock()
				n++
				mu.Unlock()
			}()
		}
		wg.Wait()
		if n != 64 {
			return fmt.Errorf("%d goroutines finished", n)
		}
		return nil
	})
	check("http_loopback", func() error {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return err
		}
		srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			io.WriteString(w, r.URL.Path)
		})}
		go srv.Serve(ln)
		defer srv.Close()
		resp, err := http.Get("http://" + ln.Addr().String() + "/2018-06-01/runtime/invocation/next")
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		if string(body) != "/2018-06-01/runtime/invocation/next" {
			return fmt.Errorf("body %q", body)
		}
		return nil
	})
	check("files", func() error {
		d, err := os.MkdirTemp("", "go-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(d)
		f := filepath.Join(d, "f")
		if err := os.WriteFile(f, make([]byte, 100000), 0600); err != nil {
			return err
		}
		if err := os.Rename(f, f+"2"); err != nil {
			return err
		}
		st, err := os.Stat(f + "2")
		if err != nil {
			return err
		}
		if st.Size() != 100000 {
			return fmt.Errorf("size %d", st.Size())
		}
		return nil
	})
	check("exec", func() error {
		out, err := exec.Command("/bin/sh", "-c", "echo hi").Output()
		if err != nil {
			return err
		}
		if string(out) != "hi\n" {
			return fmt.Errorf("output %q", out)
		}
		return nil
	})
	check("signals_timers", func() error {
		c := make(chan os.Signal, 1)
		signal.Notify(c, syscall.SIGUSR1)
		defer signal.Stop(c)
		syscall.Kill(os.Getpid(), syscall.SIGUSR1)
		select {
		case <-c:
		case <-time.After(5 * time.Second):
			return fmt.Errorf("no SIGUSR1")
		}
		time.Sleep(5 * time.Millisecond)
		return nil
	})
	check("crypto_rand", func() error {
		_, err := rand.Read(make([]byte, 32))
		return err
	})
	out, _ := json.Marshal(results)
	fmt.Println(string(out))
	for _, v := range results {
		if v != "ok" {
			os.Exit(1)
		}
	}
}
