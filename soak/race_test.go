//go:build race

package soak_test

// raceFactor scales the soak's time and memory bounds under the race detector, which makes
// memory use 5 to 10 times larger and code 2 to 20 times slower (Go's race detector manual).
const raceFactor = 3
