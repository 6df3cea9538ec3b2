FROM alpine:3.20 AS build
COPY src/ /src/
COPY . /context/
RUN touch /build.log

FROM alpine:3.20
COPY --from=build /build.log /srv/
ADD https://example.com/app.log /srv/
