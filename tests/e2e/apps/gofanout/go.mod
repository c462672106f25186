module e2e/gofanout

go 1.19
