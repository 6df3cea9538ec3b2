from alpine:3.20
run echo one
workdir /app
cmd ["sh"]
