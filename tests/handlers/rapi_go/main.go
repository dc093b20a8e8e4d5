// A stock aws-lambda-go function (lambda.Start), unchanged from what runs
// on Lambda's provided.al2023: the Runtime API tests run it as `bootstrap`.
package main

import (
	"context"
	"errors"
	"os"
	"time"

	"github.com/aws/aws-lambda-go/lambda"
	"github.com/aws/aws-lambda-go/lambdacontext"
)

type event struct {
	Do    string `json:"do"`
	Value string `json:"value"`
}

type answer struct {
	Echo         string `json:"echo"`
	RequestID    string `json:"request_id"`
	FunctionArn  string `json:"function_arn"`
	FunctionName string `json:"function_name"`
	DeadlineMs   int64  `json:"deadline_ms"`
	RemainingMs  int64  `json:"remaining_ms"`
	NowMs        int64  `json:"now_ms"`
}

type badOrder struct{ msg string }

func (e badOrder) Error() string { return e.msg }

func handle(ctx context.Context, ev event) (answer, error) {
	lc, _ := lambdacontext.FromContext(ctx)
	dl, _ := ctx.Deadline()
	a := answer{Echo: ev.Value, FunctionName: lambdacontext.FunctionName,
		DeadlineMs: dl.UnixMilli(), RemainingMs: time.Until(dl).Milliseconds(),
		NowMs: time.Now().UnixMilli()}
	if lc != nil {
		a.RequestID = lc.AwsRequestID
		a.FunctionArn = lc.InvokedFunctionArn
	}
	switch ev.Do {
	case "fail":
		return a, badOrder{"bad order " + ev.Value}
	case "plain":
		return a, errors.New("plain failure")
	case "exit":
		os.Exit(3)
	}
	return a, nil
}

func main() { lambda.Start(handle) }
