vendor/lib/b.go
