package client

import (
	"encoding/json"
	"errors"
	"fmt"

	"github.com/modelcontextprotocol/go-sdk/jsonrpc"

	"github.com/mcpgw/mcpgw/transport"
)

// CodeConsentRequired is the JSON-RPC error code of a session or call
// refused because the account has not connected the OAuth-protected
// server yet, or its consent lapsed. Connect turns it into a
// *ConsentRequiredError.
const CodeConsentRequired = transport.CodeConsentRequired

// ConsentRequiredError is Connect's error when the account must consent
// before the gateway can reach the server: show URL to the account's user;
// once they approve (the gateway's callback completes the flow), connect
// again. The gateway hands out the same URL to retries while it stays
// valid, so retrying does not start new flows.
type ConsentRequiredError struct {
	URL    string // the authorization URL, valid once, for a few minutes
	Reason string // why consent is needed
	Err    error  // the gateway's refusal
}

func (e *ConsentRequiredError) Error() string {
	return fmt.Sprintf("mcpgw: consent required (%s): send the user to the authorization URL (ConsentRequiredError.URL), then connect again", e.Reason)
}

func (e *ConsentRequiredError) Unwrap() error { return e.Err }

// asConsentRequired returns err as a *ConsentRequiredError when it is the
// gateway's consent refusal, else err.
// The refusal comes before the session starts (an HTTP error, a refused
// open frame) or, on a session held for consent, as the answer to
// initialize.
func asConsentRequired(err error) error {
	var data json.RawMessage
	var re *transport.RefusalError
	var we *jsonrpc.Error
	switch {
	case errors.As(err, &re) && re.Code == CodeConsentRequired:
		data = re.Data
	case errors.As(err, &we) && we.Code == CodeConsentRequired:
		data = we.Data
	default:
		return err
	}
	var d transport.ConsentData
	if json.Unmarshal(data, &d) != nil || d.AuthorizationURL == "" {
		return err
	}
	return &ConsentRequiredError{URL: d.AuthorizationURL, Reason: d.Reason, Err: err}
}
