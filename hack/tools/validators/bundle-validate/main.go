// Command bundle-validate checks an OLM bundle directory the way `operator-sdk bundle
// validate DIR --select-optional suite=operatorframework` does: the nearest substitute for
// operator-sdk, whose Go module the proxy reachable here does not serve (see
// docs/development.md). It runs the same validators from the same library
// (github.com/operator-framework/api/pkg/validation): the default bundle validators (CSV,
// CRDs, bundle) and the object validator, then the operatorframework suite (OperatorHub v2,
// standard capabilities, standard categories, alpha deprecated APIs, good practices), with
// k8s-version for the deprecated-API check. Before that it checks the registry+v1 format
// that operator-registry checks: metadata/annotations.yaml and its media type, package and
// channels, and a manifests/ directory holding one CSV.
//
// Usage: bundle-validate [-k8s-version 1.36] DIR   (exit 1 on any error; warnings printed)
package main

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"

	"github.com/operator-framework/api/pkg/manifests"
	"github.com/operator-framework/api/pkg/validation"
	"sigs.k8s.io/yaml"
)

func main() {
	k8sVersion := flag.String("k8s-version", "1.36", "Kubernetes version for the deprecated-API check")
	flag.Parse()
	if flag.NArg() != 1 {
		fmt.Fprintln(os.Stderr, "usage: bundle-validate [-k8s-version V] DIR")
		os.Exit(2)
	}
	dir := flag.Arg(0)
	errors := formatErrors(dir)
	for _, e := range errors {
		fmt.Fprintf(os.Stderr, "ERROR bundle format: %s\n", e)
	}
	if len(errors) > 0 {
		os.Exit(1)
	}
	bundle, err := manifests.GetBundleFromDir(dir)
	if err != nil || bundle == nil {
		fmt.Fprintf(os.Stderr, "ERROR loading the bundle: %v\n", err)
		os.Exit(1)
	}
	validators := validation.DefaultBundleValidators.WithValidators(
		validation.ObjectValidator,
		validation.OperatorHubV2Validator,
		validation.StandardCapabilitiesValidator,
		validation.StandardCategoriesValidator,
		validation.AlphaDeprecatedAPIsValidator,
		validation.GoodPracticesValidator,
	)
	objects := append(bundle.ObjectsToValidate(), map[string]string{"k8s-version": *k8sVersion})
	nErrors, nWarnings := 0, 0
	for _, result := range validators.Validate(objects...) {
		for _, e := range result.Errors {
			fmt.Fprintf(os.Stderr, "ERROR %s: %s\n", result.Name, e.Error())
			nErrors++
		}
		for _, w := range result.Warnings {
			fmt.Fprintf(os.Stderr, "WARN  %s: %s\n", result.Name, w.Error())
			nWarnings++
		}
	}
	if nErrors > 0 {
		os.Exit(1)
	}
	fmt.Printf("%s: bundle %s valid (%d CRDs, %d warnings; default validators + suite=operatorframework)\n",
		dir, bundle.CSV.GetName(), len(bundle.V1CRDs), nWarnings)
}

// formatErrors checks the registry+v1 layout (operator-registry's bundle format rules).
func formatErrors(dir string) []string {
	var errs []string
	raw, err := os.ReadFile(filepath.Join(dir, "metadata", "annotations.yaml"))
	if err != nil {
		return []string{"metadata/annotations.yaml: " + err.Error()}
	}
	var doc struct {
		Annotations map[string]string `json:"annotations"`
	}
	if err := yaml.UnmarshalStrict(raw, &doc); err != nil {
		return []string{"metadata/annotations.yaml: " + err.Error()}
	}
	want := map[string]string{
		"operators.operatorframework.io.bundle.mediatype.v1": "registry+v1",
		"operators.operatorframework.io.bundle.manifests.v1": "manifests/",
		"operators.operatorframework.io.bundle.metadata.v1":  "metadata/",
	}
	for k, v := range want {
		if doc.Annotations[k] != v {
			errs = append(errs, fmt.Sprintf("annotation %s must be %q, is %q", k, v, doc.Annotations[k]))
		}
	}
	for _, k := range []string{"operators.operatorframework.io.bundle.package.v1", "operators.operatorframework.io.bundle.channels.v1"} {
		if doc.Annotations[k] == "" {
			errs = append(errs, "annotation "+k+" is missing")
		}
	}
	entries, err := os.ReadDir(filepath.Join(dir, "manifests"))
	if err != nil {
		return append(errs, "manifests/: "+err.Error())
	}
	csvs := 0
	for _, e := range entries {
		if e.IsDir() {
			errs = append(errs, "manifests/ must be flat, found directory "+e.Name())
			continue
		}
		raw, err := os.ReadFile(filepath.Join(dir, "manifests", e.Name()))
		if err != nil {
			errs = append(errs, err.Error())
			continue
		}
		var meta struct {
			Kind string `json:"kind"`
		}
		if err := yaml.Unmarshal(raw, &meta); err != nil {
			errs = append(errs, "manifests/"+e.Name()+": "+err.Error())
			continue
		}
		if meta.Kind == "ClusterServiceVersion" {
			csvs++
		}
	}
	if csvs != 1 {
		errs = append(errs, fmt.Sprintf("manifests/ must hold exactly one ClusterServiceVersion, holds %d", csvs))
	}
	return errs
}
