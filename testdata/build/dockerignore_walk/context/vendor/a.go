vendor/a.go
