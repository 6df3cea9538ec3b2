FROM alpine:3.20
WORKDIR app/
RUN touch file
