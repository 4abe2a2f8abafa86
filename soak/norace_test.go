//go:build !race

package soak_test

const raceTimeFactor, raceMemFactor = 1, 1
