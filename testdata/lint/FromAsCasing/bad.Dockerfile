FROM alpine:3.20 as build
RUN echo hi > /out

FROM scratch
COPY --from=build /out /out
