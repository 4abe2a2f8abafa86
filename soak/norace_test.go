//go:build !race

package soak_test

const raceFactor = 1
