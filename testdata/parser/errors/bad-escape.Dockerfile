# escape=!
FROM busybox
