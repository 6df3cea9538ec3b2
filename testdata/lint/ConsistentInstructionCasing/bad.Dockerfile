FROM alpine:3.20
run echo one
RUN echo two
Run echo three
