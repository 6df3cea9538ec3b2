FROM alpine:3.20
ARG GITHUB_TOKEN
ENV DB_PASSWORD=changeme
ARG super_secret_value=1 auth=bar
