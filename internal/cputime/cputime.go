// Package cputime reads the CPU time this process has used, for
// benchmarks that report CPU per operation: on a shared machine it says
// what an operation costs independently of how long it waited.
package cputime
