//go:build race

package soak_test

// Under the race detector, which makes memory use 5 to 10 times larger and code 2 to 20 times
// slower (Go's race detector manual), the soak's bounds scale: time by raceTimeFactor, memory
// by raceMemFactor (measured: 1.6 GiB peak against 0.4 GiB without it, 12 s for the slowest
// transfer against 1.7 s).
const raceTimeFactor, raceMemFactor = 3, 5
