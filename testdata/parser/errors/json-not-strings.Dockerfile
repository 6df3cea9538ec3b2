FROM busybox
CMD ["echo", ["nested"]]
