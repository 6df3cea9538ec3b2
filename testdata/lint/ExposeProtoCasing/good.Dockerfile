FROM scratch
EXPOSE 80 80/tcp 53/udp 9000-9001/sctp
# check=skip=ExposeProtoCasing
EXPOSE 443/TCP
