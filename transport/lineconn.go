package transport

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// LineOptions tune a LineConn.
type LineOptions struct {
	// MaxMessageBytes caps one incoming line. Default DefaultMaxMessageBytes.
	MaxMessageBytes int64
	// decode decodes one line; nil means decodeMessage.
	decode func([]byte) (jsonrpc.Message, error)
}

// LineConn is an mcp.Connection over a byte stream carrying one JSON-RPC
// message per line. An incoming line over the cap or that is not a JSON-RPC
// message costs only itself: Read returns a *MessageError for it and reads
// on. Blank lines are skipped.
type LineConn struct {
	rwc    io.ReadWriteCloser
	br     *bufio.Reader
	max    int64
	decode func([]byte) (jsonrpc.Message, error)

	incoming chan jsonrpc.Message // from readLoop
	msgErrs  chan *MessageError   // from readLoop
	failed   chan struct{}        // closed by readLoop when the stream ends
	err      error                // why the stream ended; set before failed is closed
	done     chan struct{}        // closed by Close
	wg       sync.WaitGroup       // readLoop
	looping  bool                 // readLoop was started (or can no longer be); only Read uses it
	loopMu   sync.Mutex           // orders starting readLoop with closing done (and Close's Wait)

	wmu  sync.Mutex // serialises writes so lines never interleave
	wbuf []byte     // guarded by wmu

	closeOnce sync.Once
	closeErr  error
}

var _ mcp.Connection = (*LineConn)(nil)

// NewLineConn returns a LineConn over rwc. If rwc has SetWriteDeadline, a
// Write honours its context's deadline and cancellation.
func NewLineConn(rwc io.ReadWriteCloser, opts LineOptions) *LineConn {
	return newLineConn(rwc, bufio.NewReaderSize(rwc, lineBufSize), opts)
}

// newLineConn continues reading from br, which may hold bytes buffered
// while the open frame was read.
func newLineConn(rwc io.ReadWriteCloser, br *bufio.Reader, opts LineOptions) *LineConn {
	if opts.MaxMessageBytes <= 0 {
		opts.MaxMessageBytes = DefaultMaxMessageBytes
	}
	if opts.decode == nil {
		opts.decode = decodeMessage
	}
	c := &LineConn{
		rwc:      rwc,
		br:       br,
		max:      opts.MaxMessageBytes,
		decode:   opts.decode,
		incoming: make(chan jsonrpc.Message),
		msgErrs:  make(chan *MessageError),
		failed:   make(chan struct{}),
		done:     make(chan struct{}),
	}
	return c
}

// next reads the next message from the stream: a message, a *MessageError
// for an unusable line, or the error that ended the stream.
func (c *LineConn) next() (jsonrpc.Message, *MessageError, error) {
	for {
		line, err := readLine(c.br, int(min(c.max, int64(maxInt))), true)
		switch {
		case errors.Is(err, errLineTooLong):
			return nil, tooLarge(c.max, line), nil
		case err != nil:
			return nil, nil, fmt.Errorf("%w: %v", mcp.ErrConnectionClosed, err)
		case isBlank(line):
			continue
		}
		msg, err := c.decode(line)
		if err != nil {
			merr, _ := AsMessageError(err)
			return nil, merr, nil
		}
		return msg, nil, nil
	}
}

// readLoop reads lines until the stream ends, for Reads whose context can
// end: reading in a goroutine of its own lets Read honour its context
// whatever the stream supports.
func (c *LineConn) readLoop() {
	defer c.wg.Done()
	for {
		msg, merr, err := c.next()
		if err != nil {
			c.err = err
			close(c.failed)
			return
		}
		if merr != nil {
			select {
			case c.msgErrs <- merr:
			case <-c.done:
				return
			}
			continue
		}
		select {
		case c.incoming <- msg:
		case <-c.done:
			return
		}
	}
}

const maxInt = int(^uint(0) >> 1)

func isBlank(line []byte) bool {
	for _, b := range line {
		if b != ' ' && b != '\t' && b != '\r' {
			return false
		}
	}
	return true
}

// Read returns the next message, a *MessageError for an unusable line, or
// an error wrapping mcp.ErrConnectionClosed once the stream has ended.
// Reads are not concurrent. As long as every Read's context cannot end
// (a session's reader ends the read by closing the connection), Read reads
// the stream itself; the first Read whose context can end starts a
// goroutine that reads on for it and every later Read.
func (c *LineConn) Read(ctx context.Context) (jsonrpc.Message, error) {
	if ctx.Done() == nil && !c.looping {
		select {
		case <-c.done:
			return nil, mcp.ErrConnectionClosed
		default:
		}
		msg, merr, err := c.next()
		switch {
		case err != nil:
			return nil, err
		case merr != nil:
			return nil, merr
		}
		return msg, nil
	}
	if !c.looping {
		c.looping = true
		c.loopMu.Lock()
		select {
		case <-c.done: // closed: the select below says so
		default:
			c.wg.Add(1)
			go c.readLoop()
		}
		c.loopMu.Unlock()
	}
	select {
	case msg := <-c.incoming:
		return msg, nil
	case merr := <-c.msgErrs:
		return nil, merr
	case <-c.failed:
		return nil, c.err
	case <-c.done:
		return nil, mcp.ErrConnectionClosed
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// Write sends msg as one line. A failed write may have sent part of the
// line, which would corrupt the next one, so it closes the connection.
func (c *LineConn) Write(ctx context.Context, msg jsonrpc.Message) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	select {
	case <-c.done:
		return mcp.ErrConnectionClosed
	default:
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	wbuf, err := appendMessage(c.wbuf[:0], msg)
	if err != nil {
		return err
	}
	c.wbuf = append(wbuf, '\n')
	stop := func() bool { return false }
	if d, ok := c.rwc.(interface{ SetWriteDeadline(time.Time) error }); ok {
		stop = watchContext(ctx, d.SetWriteDeadline)
	}
	_, err = c.rwc.Write(c.wbuf)
	cancelled := stop()
	if cap(c.wbuf) > lineBufSize {
		c.wbuf = nil // do not pin the buffer of one large message
	}
	if err != nil {
		c.Close()
		if cancelled {
			return fmt.Errorf("%w: write abandoned: %v", mcp.ErrConnectionClosed, ctx.Err())
		}
		return fmt.Errorf("%w: %v", mcp.ErrConnectionClosed, err)
	}
	return nil
}

// Close closes the stream and waits for the reader to stop. It is safe to
// call more than once and concurrently with Read and Write.
func (c *LineConn) Close() error {
	c.closeOnce.Do(func() {
		c.loopMu.Lock()
		close(c.done)
		c.loopMu.Unlock()
		c.closeErr = c.rwc.Close()
		c.wg.Wait()
	})
	return c.closeErr
}

// SessionID implements mcp.Connection; framed sessions have no id on the
// wire.
func (c *LineConn) SessionID() string { return "" }
