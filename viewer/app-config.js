/** @type {AppTypes.Config} */
// The OHIF Viewer's configuration for a dicomweb-gateway (docs/VIEWER.md). viewer/serve.py
// serves this file as /app-config.js with the gateway's DICOMweb base URL in place of the
// placeholder below.
const gateway = '@GATEWAY_URL@';

window.config = {
  name: 'dicomweb-gateway',
  routerBasename: '/',
  extensions: [],
  modes: [],
  customizationService: {},
  showStudyList: true,
  showCPUFallbackMessage: true,
  showLoadingIndicator: true,
  strictZSpacingForVolumeViewport: true,
  // Image decoding workers, and requests in flight at once: a federation's sites answer
  // retrievals over a few DIMSE associations each, so more parallel requests only queue.
  maxNumberOfWebWorkers: 2,
  maxNumRequests: {
    interaction: 100,
    thumbnail: 5,
    prefetch: 10,
  },
  showErrorDetails: 'always',
  defaultDataSourceName: 'gateway',
  dataSources: [
    {
      namespace: '@ohif/extension-default.dataSourcesModule.dicomweb',
      sourceName: 'gateway',
      configuration: {
        friendlyName: 'dicomweb-gateway',
        name: 'gateway',
        qidoRoot: gateway,
        wadoRoot: gateway,
        wadoUriRoot: gateway,
        // QIDO-RS: includefield is honoured; fuzzy matching is not performed (the gateway says
        // so in a Warning). With supportsWildcard the study list's filters send *text*: the
        // gateway passes wildcards to the sites' C-FIND, but refuses them on a patient's
        // pseudonym when it de-identifies (a pseudonym has no parts to match), so the filters
        // send what is typed, and a whole pseudonym finds its patient's studies.
        qidoSupportsIncludeField: true,
        supportsWildcard: false,
        supportsFuzzyMatching: false,
        // Images and thumbnails as WADO-RS frames, decoded in the browser: the gateway sends
        // each frame in the transfer syntax the site holds (transfer-syntax=*), so JPEG 2000 and
        // JPEG-LS images show too, which its rendered and thumbnail resources cannot decode (501).
        imageRendering: 'wadors',
        thumbnailRendering: 'wadors',
        enableStudyLazyLoad: true,
        supportsReject: false,
        dicomUploadEnabled: false,
        staticWado: false,
        // Bulk data and frames come as multipart/related.
        singlepart: '',
        bulkDataURI: {
          enabled: true,
        },
        omitQuotationForMultipartRequest: true,
      },
    },
  ],
  httpErrorHandler: error => {
    console.warn(`dicomweb-gateway answered ${error.status}`);
  },
};
