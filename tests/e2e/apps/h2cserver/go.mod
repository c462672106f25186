module e2e/h2cserver

go 1.19

require (
	golang.org/x/net v0.7.0
	golang.org/x/text v0.7.0 // indirect
)
