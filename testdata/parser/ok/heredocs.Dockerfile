FROM busybox
RUN <<EOF
echo one
echo two
EOF
RUN <<-EOT bash
	echo tabs stripped
	EOT
COPY <<"EOF" /etc/motd
no $expansion here
EOF
RUN cat <<A <<B
first
A
second
B
