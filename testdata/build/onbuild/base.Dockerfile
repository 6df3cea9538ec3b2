FROM busybox:latest
RUN echo base > /base-marker
# Recorded in the config, run by images built FROM this one; no history entry here.
ONBUILD RUN echo onbuild-ran > /onbuild-run
ONBUILD COPY trigger.txt /from-trigger/
ONBUILD ENV TRIGGERED=yes
LABEL role=base
