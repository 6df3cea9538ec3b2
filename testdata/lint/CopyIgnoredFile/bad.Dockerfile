FROM alpine:3.20
COPY app.log /srv/
ADD secrets/key.pem /srv/
COPY node_modules /srv/node_modules
COPY --from=alpine:3.20 /etc/os-release /srv/
