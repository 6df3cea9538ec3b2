FROM scratch
FROM scratch AS base
