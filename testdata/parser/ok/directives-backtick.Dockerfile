# escape=`
# syntax=docker/dockerfile:1
# check=skip=JSONArgsRecommended;error=true
FROM mcr.microsoft.com/windows/servercore
RUN dir c:\ `
    && echo done
COPY . c:\app\
