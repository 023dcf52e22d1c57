// Command kstatus-check prints the kstatus result (the health Flux computes) for one
// Kubernetes object read as JSON or YAML from a file argument or stdin.
//
// Output is one line: "<Status>\t<message>", for example "Current\tResource is Ready".
// With -expect STATUS it exits 1 when the computed status differs.
package main

import (
	"flag"
	"fmt"
	"io"
	"os"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/cli-utils/pkg/kstatus/status"
	"sigs.k8s.io/yaml"
)

func main() {
	expect := flag.String("expect", "", "exit 1 unless the computed status equals this (Current, InProgress, Failed, ...)")
	flag.Usage = func() {
		fmt.Fprintln(os.Stderr, "usage: kstatus-check [-expect STATUS] [FILE|-]")
		flag.PrintDefaults()
	}
	flag.Parse()

	res, err := compute(flag.Arg(0))
	if err != nil {
		fmt.Fprintln(os.Stderr, "kstatus-check:", err)
		os.Exit(2)
	}
	fmt.Printf("%s\t%s\n", res.Status, res.Message)
	if *expect != "" && string(res.Status) != *expect {
		fmt.Fprintf(os.Stderr, "kstatus-check: expected %s, got %s\n", *expect, res.Status)
		os.Exit(1)
	}
}

func compute(path string) (*status.Result, error) {
	var (
		raw []byte
		err error
	)
	if path == "" || path == "-" {
		raw, err = io.ReadAll(os.Stdin)
	} else {
		raw, err = os.ReadFile(path)
	}
	if err != nil {
		return nil, err
	}
	// YAMLToJSON accepts JSON unchanged, so one path serves both formats.
	js, err := yaml.YAMLToJSON(raw)
	if err != nil {
		return nil, fmt.Errorf("parse: %w", err)
	}
	obj := &unstructured.Unstructured{}
	if err := obj.UnmarshalJSON(js); err != nil {
		return nil, fmt.Errorf("decode object: %w", err)
	}
	return status.Compute(obj)
}
