FROM alpine:3.20 AS Builder
RUN echo build > /out

FROM alpine:3.20
COPY --from=Builder /out /out
