FROM alpine:3.20 AS build
RUN echo hi > /out

FROM scratch
COPY --from=build /out /out
